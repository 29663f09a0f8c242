# Per-system assembly: one pkgs, one crane lib, and every output the flake exposes for `system`.
{
  lib,
  system,
  nixpkgs,
  rust-overlay,
  crane,
  root,
}:
let
  pkgs = import nixpkgs {
    inherit system;
    overlays = [ rust-overlay.overlays.default ];
  };

  # The toolchain is whatever rust-toolchain.toml pins (channel 1.95.0 + rustfmt, clippy);
  # the devShell adds rust-src/rust-analyzer on top of the same channel.
  toolchainFile = root + "/rust-toolchain.toml";
  toolchainFor = p: p.rust-bin.fromRustupToolchainFile toolchainFile;
  toolchain = toolchainFor pkgs;
  devToolchain =
    let
      pinned = (builtins.fromTOML (builtins.readFile toolchainFile)).toolchain;
    in
    pkgs.rust-bin.fromRustupToolchain (
      pinned
      // {
        components = (pinned.components or [ ]) ++ [
          "rust-src"
          "rust-analyzer"
        ];
      }
    );
  craneLib = (crane.mkLib pkgs).overrideToolchain toolchainFor;

  # The one nixpkgs instance with unfree CUDA allowed: only the gpu shell and the vLLM image
  # reach it, so evaluating anything else stays free-only.
  pkgsCuda = import nixpkgs {
    inherit system;
    config = {
      allowUnfree = true;
      cudaSupport = true;
    };
  };

  litellm = pkgs.callPackage ./litellm.nix { inherit root; };

  runner = import ./runner.nix { inherit lib craneLib root; };
  gauntlet = runner.package;

  images = pkgs.callPackage ./images.nix { inherit gauntlet litellm pkgsCuda; };

  # Every suite of the default stack on loopback inside the build sandbox (process backend:
  # Redis, the Nix LiteLLM, gauntlet's simulator, sink and fault proxies as processes; no VM,
  # no Docker). A binary cache keeps the result until an input changes.
  integration = pkgs.runCommand "gauntlet-integration" {
    nativeBuildInputs = [
      gauntlet
      pkgs.redis
      litellm
    ];
    GAUNTLET_LITELLM_BIN = lib.getExe litellm;
    GAUNTLET_REQUIRE = "all";
    LITELLM_LOCAL_MODEL_COST_MAP = "True";
  } ''
    export HOME=$TMPDIR
    cd $TMPDIR
    export GAUNTLET_ARTIFACTS=$TMPDIR/artifacts
    gauntlet test || { cat $TMPDIR/artifacts/logs/*.log 2>/dev/null | tail -n 100; exit 1; }
    mkdir -p $out
    cp $TMPDIR/artifacts/summary.json $TMPDIR/artifacts/junit.xml $out/
  '';

  apps = import ./apps.nix {
    inherit
      lib
      pkgs
      gauntlet
      litellm
      ;
  };

  shells = import ./shell.nix {
    inherit
      lib
      pkgs
      pkgsCuda
      devToolchain
      litellm
      ;
  };
in
{
  inherit
    system
    pkgs
    gauntlet
    litellm
    images
    apps
    shells
    ;
  checks = runner.checks // {
    inherit integration;
    litellm-lock = litellm.check;
  };
}
