# The `gauntlet` runner, built with crane: dependencies once (buildDepsOnly), then the crate
# against those artifacts. The same artifacts feed clippy and the nextest unit tests.
{
  lib,
  craneLib,
  root,
}:
let
  # Cargo sources plus what the code and its tests read at build or test time: stack/ (the
  # runner include_str!s stack/gauntlet.toml, router.yaml and litellm/requirements.lock),
  # tests/fixtures/ (configs and stacks the tests mirror and run) and README.md (tests/cli.rs
  # checks every command line it documents). (A plain source filter rather than lib.fileset
  # keeps evaluation working on older Nix too.)
  kept = map (d: toString (root + "/${d}")) [
    "stack"
    "tests/fixtures"
  ];
  readme = toString (root + "/README.md");
  src = lib.cleanSourceWith {
    src = root;
    name = "gauntlet-source";
    filter =
      path: type:
      craneLib.filterCargoSources path type
      || path == readme
      || lib.any (d: path == d || lib.hasPrefix (d + "/") path) kept
      # cleanSourceWith descends only into the folders this keeps.
      || (type == "directory" && lib.any (d: lib.hasPrefix (path + "/") d) kept);
  };

  commonArgs = {
    inherit src;
    inherit (craneLib.crateNameFromCargoToml { cargoToml = root + "/Cargo.toml"; }) pname version;
    strictDeps = true;
    # reqwest uses rustls: no OpenSSL/pkg-config needed.
  };

  cargoArtifacts = craneLib.buildDepsOnly commonArgs;

  package = craneLib.buildPackage (
    commonArgs
    // {
      inherit cargoArtifacts;
      # tests/integration.rs (harness = false) needs redis + LiteLLM + the simulator running:
      # it runs through `nix run .#integration`, never inside the sandbox.
      doCheck = false;
      meta = {
        description = "Runs an LLM gateway stack through its test suites";
        mainProgram = "gauntlet";
        license = with lib.licenses; [
          mit
          asl20
        ];
      };
    }
  );
in
{
  inherit package cargoArtifacts;

  checks = {
    clippy = craneLib.cargoClippy (
      commonArgs
      // {
        inherit cargoArtifacts;
        cargoClippyExtraArgs = "--all-targets -- -D warnings";
      }
    );

    fmt = craneLib.cargoFmt { inherit (commonArgs) src pname version; };

    # Unit tests only; the integration harness needs live services.
    nextest = craneLib.cargoNextest (
      commonArgs
      // {
        inherit cargoArtifacts;
        cargoNextestExtraArgs = "--lib";
        partitions = 1;
        partitionType = "count";
      }
    );
  };
}
