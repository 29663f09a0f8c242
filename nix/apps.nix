# `nix run` entry points. Each wraps the runner with redis-server and the pinned LiteLLM on
# PATH, and points the runner at that LiteLLM so it never provisions a venv of its own.
{
  lib,
  pkgs,
  gauntlet,
  litellm,
}:
let
  env = ''
    export GAUNTLET_LITELLM_BIN="${lib.getExe litellm}"
    # Hermetic prices: LiteLLM must not fetch its model cost map at import.
    export LITELLM_LOCAL_MODEL_COST_MAP="''${LITELLM_LOCAL_MODEL_COST_MAP:-True}"
  '';

  mkApp =
    name: description: text:
    let
      drv = pkgs.writeShellApplication {
        inherit name;
        runtimeInputs = [
          gauntlet
          pkgs.redis
          litellm
        ];
        text = env + text;
      };
    in
    {
      type = "app";
      program = "${drv}/bin/${name}";
      meta = { inherit description; };
    };
in
{
  # Every suite against a local stack. JUnit: target/gauntlet/junit.xml, logs: target/gauntlet/.
  integration = mkApp "gauntlet-integration" "Run every gauntlet suite against a local stack" ''
    exec gauntlet test "$@"
  '';

  # The provider simulator alone (default: an ephemeral port on loopback).
  sim = mkApp "gauntlet-sim" "Run the gauntlet provider simulator" ''
    if [ "$#" -eq 0 ]; then set -- --listen 127.0.0.1:0; fi
    exec gauntlet sim "$@"
  '';

  # The bare CLI with the same environment: `nix run .#gauntlet -- up --detach`, `... -- down`.
  gauntlet = mkApp "gauntlet" "gauntlet CLI with redis and the pinned LiteLLM on PATH" ''
    exec gauntlet "$@"
  '';
}
