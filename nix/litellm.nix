# LiteLLM 1.100.5's proxy environment from the same lock as pip: stack/litellm/requirements.lock.
#
# One source of truth. nix/litellm-lock.json is generated from that lock by
# nix/update-litellm-lock: for each locked package and each system, the one wheel pip would
# install on Python 3.12 there, named by PyPI and hashed by the pip lock's own sha256. Nothing
# here comes from nixpkgs' Python package set: no `pythonRelaxDeps`, no other versions. Three
# checks keep the two locks one:
#   - evaluation: the JSON records the sha256 of requirements.lock and this file refuses to
#     evaluate when the lock changed since (below, `fresh`);
#   - `cargo test` (and the flake's nextest check): every package, version and file of the JSON
#     is the pip lock's, and every pip lock entry is in the JSON
#     (stack::litellm::tests::the_nix_lock_holds_the_pip_locks_packages_versions_and_files);
#   - `checks.litellm-lock`: the built environment's installed distributions, read back by
#     importlib.metadata, equal the JSON's names and versions for this system.
#
# The environment is a venv in the store: the wheels installed by `installer` (the PEP 427
# installer nixpkgs itself uses), native extensions given their libraries by autoPatchelfHook.
{
  lib,
  stdenv,
  python312,
  fetchurl,
  autoPatchelfHook,
  zlib,
  runCommand,
  root,
}:
let
  python = python312;
  lock = lib.importJSON ./litellm-lock.json;
  system = stdenv.hostPlatform.system;

  pipLock = root + "/stack/litellm/requirements.lock";
  fresh = builtins.hashFile "sha256" pipLock == lock.source_sha256;

  needed = builtins.filter (p: p.systems ? ${system}) lock.packages;
  pick =
    p:
    let
      f = p.systems.${system};
    in
    # Fails the build, not the evaluation: `nix flake check` still evaluates every system.
    if f ? missing then
      runCommand "no-wheel-${p.name}-${p.version}" { } ''
        echo "litellm: ${p.name}==${p.version} has no wheel for ${system} among the files the pip lock hashes (nix/litellm-lock.json)" >&2
        exit 1
      ''
    else
      fetchurl {
        inherit (f) url sha256;
        name = f.file;
      };
  wheels = map pick needed;

  version = (lib.findFirst (p: p.name == "litellm") (throw "litellm: not in nix/litellm-lock.json") lock.packages).version;

  env = stdenv.mkDerivation {
    pname = "litellm-proxy-env";
    inherit version;
    dontUnpack = true;
    dontConfigure = true;
    nativeBuildInputs = [ python ] ++ lib.optionals stdenv.hostPlatform.isLinux [ autoPatchelfHook ];
    # What manylinux wheels expect from the system (libstdc++, libgcc_s, libz).
    buildInputs = lib.optionals stdenv.hostPlatform.isLinux [
      stdenv.cc.cc.lib
      zlib
    ];
    # Wheels load these only for features the proxy does not use (GPU, audio codecs).
    autoPatchelfIgnoreMissingDeps = [
      "libcuda.so.1"
      "libsndfile.so*"
    ];
    buildPhase = ''
      runHook preBuild
      ${python.interpreter} -m venv --without-pip $out
      # installer reads a wheel's name and version from its file name: the store path's hash
      # prefix goes first.
      mkdir dist
      for w in ${lib.concatStringsSep " " wheels}; do
        cp "$w" "dist/$(stripHash "$w")"
      done
      for w in dist/*.whl; do
        PYTHONPATH=${python.pkgs.installer}/${python.sitePackages} \
          $out/bin/python -m installer --no-compile-bytecode "$w"
      done
      runHook postBuild
    '';
    dontInstall = true;
    # Importing litellm fetches the model price map from GitHub unless told not to.
    LITELLM_LOCAL_MODEL_COST_MAP = "True";
    doInstallCheck = true;
    installCheckPhase = ''
      export HOME=$TMPDIR
      $out/bin/python -c 'import litellm, litellm.proxy.proxy_server'
      $out/bin/litellm --version
    '';
    passthru = {
      inherit lock needed python;
      # Names and versions this system's environment must hold, for checks.litellm-lock.
      expected = map (p: "${p.name}==${p.version}") needed;
    };
    meta = {
      description = "LiteLLM ${version} proxy environment, from gauntlet's hash-locked pip lock";
      mainProgram = "litellm";
    };
  };

  # The environment holds exactly the lock's distributions for this system: read back from
  # the installed metadata, not from the list that built it.
  check = runCommand "litellm-lock-check" { } ''
    ${env}/bin/python - <<'EOF' > $out
    import importlib.metadata as m, re, sys
    norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
    have = sorted(f"{norm(d.metadata['Name'])}=={d.version}" for d in m.distributions())
    want = sorted("""${lib.concatStringsSep " " env.passthru.expected}""".split())
    if have != want:
        sys.exit(f"installed: {sorted(set(have) - set(want))} not in the lock; locked: {sorted(set(want) - set(have))} not installed")
    print("\n".join(have))
    EOF
  '';
in
assert lib.assertMsg fresh
  "stack/litellm/requirements.lock changed since nix/litellm-lock.json was written: run nix/update-litellm-lock";
env.overrideAttrs (old: {
  passthru = old.passthru // {
    inherit check;
  };
})
