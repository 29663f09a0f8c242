{
  description = "gauntlet: test harness for an LLM gateway stack (runner, pinned LiteLLM 1.100.5, redis, images)";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";
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
            sim-image
            image-redis
            image-litellm
            image-vllm
            images
            ;
        }
      );

      apps = forSystems allSystems (s: {
        default = s.apps.integration;
        inherit (s.apps) integration sim gauntlet;
      });

      devShells = forSystems allSystems (
        s:
        {
          default = s.shells.default;
        }
        # Unfree CUDA bits are confined to this one output (see nix/shell.nix).
        // lib.optionalAttrs (isLinux s.system) { gpu = s.shells.gpu; }
      );

      checks = forSystems allSystems (s: s.checks // { gauntlet = s.gauntlet; });
    };
}
