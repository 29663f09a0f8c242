# Container images for the Docker backend.
#
#   sim-image      built here from the runner: `$(nix build .#sim-image --print-out-paths) | docker image load`
#   image-redis    \
#   image-litellm   } upstream images pinned by digest with dockerTools.pullImage:
#   image-vllm     /  `docker image load -i $(nix build .#image-redis --print-out-paths)`
#
# !!! The upstream digests and hashes below are PLACEHOLDERS: they could not be resolved on the
# machine this was written on (no registry access) and no public pin for these exact tags was
# found. Building one fails until it is refreshed; evaluating one prints a warning. Refresh with
#
#   nix run nixpkgs#nix-prefetch-docker -- --image-name redis --image-tag 7-alpine --arch amd64 --os linux
#   nix run nixpkgs#nix-prefetch-docker -- --image-name ghcr.io/berriai/litellm --image-tag main-v1.100.5-stable --arch amd64 --os linux
#   nix run nixpkgs#nix-prefetch-docker -- --image-name vllm/vllm-openai --image-tag v0.31.0 --arch amd64 --os linux
#
# (repeat with --arch arm64 for aarch64-linux), paste imageDigest + hash, set placeholder = false.
{
  lib,
  stdenv,
  dockerTools,
  linkFarm,
  gauntlet,
}:
let
  arch =
    {
      x86_64-linux = "amd64";
      aarch64-linux = "arm64";
    }
    .${stdenv.hostPlatform.system} or (throw "images: unsupported system ${stdenv.hostPlatform.system}");

  placeholderDigest = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

  pins = {
    redis = {
      imageName = "redis";
      finalImageTag = "7-alpine";
      amd64 = {
        imageDigest = placeholderDigest;
        hash = lib.fakeHash;
      };
      arm64 = {
        imageDigest = placeholderDigest;
        hash = lib.fakeHash;
      };
      placeholder = true;
    };
    litellm = {
      imageName = "ghcr.io/berriai/litellm";
      # Tag naming follows BerriAI's `main-v<version>-stable` scheme; UNVERIFIED for 1.100.5.
      finalImageTag = "main-v1.100.5-stable";
      amd64 = {
        imageDigest = placeholderDigest;
        hash = lib.fakeHash;
      };
      arm64 = {
        imageDigest = placeholderDigest;
        hash = lib.fakeHash;
      };
      placeholder = true;
    };
    vllm = {
      imageName = "vllm/vllm-openai";
      # GPU lane only (see docs/nix.md); pick the tag the GPU suites are validated against.
      finalImageTag = "v0.31.0";
      amd64 = {
        imageDigest = placeholderDigest;
        hash = lib.fakeHash;
      };
      arm64 = {
        imageDigest = placeholderDigest;
        hash = lib.fakeHash;
      };
      placeholder = true;
    };
  };

  pull =
    name:
    let
      pin = pins.${name};
    in
    lib.warnIf pin.placeholder
      "gauntlet image-${name}: placeholder digest/hash; refresh it with nix-prefetch-docker (docs/nix.md)"
      (
        dockerTools.pullImage {
          inherit (pin) imageName finalImageTag;
          inherit (pin.${arch}) imageDigest hash;
          finalImageName = pin.imageName;
          os = "linux";
          inherit arch;
        }
      );

  sim-image = dockerTools.streamLayeredImage {
    name = "gauntlet-sim";
    tag = gauntlet.version;
    contents = [ gauntlet ];
    config = {
      Cmd = [
        "gauntlet"
        "sim"
        "--listen"
        "0.0.0.0:8000"
      ];
      Env = [ "PATH=/bin" ];
      ExposedPorts = {
        "8000/tcp" = { };
      };
      Labels = {
        "org.opencontainers.image.title" = "gauntlet provider simulator";
        "org.opencontainers.image.version" = gauntlet.version;
      };
    };
  };

  image-redis = pull "redis";
  image-litellm = pull "litellm";
  image-vllm = pull "vllm";
in
{
  inherit
    sim-image
    image-redis
    image-litellm
    image-vllm
    ;

  # The CPU stack's upstream images in one directory (vLLM is GPU-only, so it is left out).
  images = linkFarm "gauntlet-images" [
    {
      name = "redis.tar";
      path = image-redis;
    }
    {
      name = "litellm.tar";
      path = image-litellm;
    }
  ];
}
