{
  description = "gauntlet: test harness for an LLM gateway stack (runner, pinned LiteLLM 1.100.5, redis, images)";

  inputs = {
    # nixos-26.05: what this crane revision supports (crane dropped 25.11 in PR #1056) and the
    # very revision crane tests itself against (its test/flake.lock, nixpkgs-latest-release).
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    rust-overlay = {
      url = "github:oxalica/rust-overlay";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    crane.url = "github:ipetkov/crane";
  };

  outputs =
    {
      self,
      nixpkgs,
      rust-overlay,
      crane,
    }:
    let
      inherit (nixpkgs) lib;

      linuxSystems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      darwinSystems = [
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      allSystems = linuxSystems ++ darwinSystems;

      # Everything per system lives in nix/default.nix; this file only routes outputs.
      perSystem = lib.genAttrs allSystems (
        system:
        import ./nix {
          inherit
            lib
            system
            nixpkgs
            rust-overlay
            crane
            ;
          root = ./.;
        }
      );
      forSystems = systems: f: lib.genAttrs systems (system: f perSystem.${system});
      isLinux = system: builtins.elem system linuxSystems;
    in
    {
      packages = forSystems allSystems (
        s:
        {
          default = s.gauntlet;
          inherit (s) gauntlet litellm;
        }
        # Container images only make sense for Linux hosts.
        // lib.optionalAttrs (isLinux s.system) {
          inherit (s.images)
            image-redis
            image-litellm
            image-gauntlet
            image-vllm
            ;
        }
      );

      apps = forSystems allSystems (
        s:
        {
          default = s.apps.integration;
          inherit (s.apps) integration sim gauntlet;
        }
        # Loads the Nix-built images into Docker and prints the GAUNTLET_IMAGE_* variables.
        // lib.optionalAttrs (isLinux s.system) {
          load-images = {
            type = "app";
            program = lib.getExe s.images.load-images;
            meta.description = "Load gauntlet's Nix-built images into Docker";
          };
        }
      );

      devShells = forSystems allSystems (
        s:
        {
          default = s.shells.default;
        }
        # Unfree CUDA bits are confined to this one output (see nix/shell.nix).
        // lib.optionalAttrs (isLinux s.system) { gpu = s.shells.gpu; }
      );

      # `nix flake check`: fmt, clippy, unit tests, the Nix LiteLLM against the pip lock, and
      # (Linux) every suite on loopback in the sandbox.
      checks = forSystems allSystems (
        s:
        builtins.removeAttrs s.checks (lib.optional (!isLinux s.system) "integration")
        // {
          gauntlet = s.gauntlet;
        }
      );
    };
}
