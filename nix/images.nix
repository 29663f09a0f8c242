# Container images for the Docker backend, built by Nix (`dockerTools.streamLayeredImage`), never
# pulled: no digest to trust, no registry to reach, and each image holds exactly what the
# process backend runs.
#
#   image-redis     redis-server from nixpkgs, on PATH
#   image-litellm   the LiteLLM proxy environment from the pip lock (nix/litellm.nix) at
#                   /opt/litellm, the path the Docker backend runs (src/stack/image/litellm.rs)
#   image-gauntlet  this flake's gauntlet at /gauntlet (simulator, ledger sink, fault proxy)
#   image-vllm      (gpu) nixpkgs' vLLM built with CUDA, its OpenAI server as entrypoint
#
# Each is a script that writes the image to stdout: `$(nix build .#image-redis --print-out-paths)
# | docker load`. `nix run .#load-images` loads the CPU stack's three and prints the
# GAUNTLET_IMAGE_<RECIPE> variables that make the Docker backend use them instead of building
# its own (src/stack/image/given.rs). Tags are Nix's output hashes: a changed input is a new tag.
{
  lib,
  dockerTools,
  runCommand,
  writeShellApplication,
  cacert,
  redis,
  gauntlet,
  litellm,
  pkgsCuda,
}:
let
  # What every image has besides its program: CA certificates (and a writable /tmp, made below).
  base = runCommand "gauntlet-image-base" { } ''
    mkdir -p $out/etc/ssl/certs
    ln -s ${cacert}/etc/ssl/certs/ca-bundle.crt $out/etc/ssl/certs/ca-certificates.crt
  '';
  env = [
    "PATH=/bin"
    "HOME=/tmp"
    "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"
  ];
  image =
    {
      name,
      contents,
      config ? { },
      links ? "",
    }:
    dockerTools.streamLayeredImage {
      name = "gauntlet-nix/${name}";
      contents = [ base ] ++ contents;
      # /tmp must be writable by any user the backend runs as.
      fakeRootCommands = ''
        mkdir -p tmp
        chmod 1777 tmp
        ${links}
      '';
      enableFakechroot = false;
      config = {
        Env = env;
        WorkingDir = "/tmp";
        Labels = {
          "org.opencontainers.image.source" = "gauntlet flake";
          "dev.gauntlet.recipe" = name;
        };
      }
      // config;
    };

  image-redis = image {
    name = "redis";
    contents = [ redis ];
  };

  image-gauntlet = image {
    name = "gauntlet";
    contents = [ gauntlet ];
    links = "ln -s ${lib.getExe gauntlet} gauntlet";
  };

  image-litellm = image {
    name = "litellm";
    contents = [ litellm ];
    links = "mkdir -p opt && ln -s ${litellm} opt/litellm";
    config.Env = env ++ [ "LITELLM_LOCAL_MODEL_COST_MAP=True" ];
  };

  # GPU lane only. No public pin of vllm/vllm-openai carries the Nix hash pullImage needs for
  # both architectures, so the image is built from nixpkgs' vLLM (CUDA, unfree) instead; the
  # upstream image the Docker manifest names stays pinned by its registry digest
  # (stack/gauntlet.toml, docs/nix.md).
  vllm = pkgsCuda.python3Packages.vllm;
  image-vllm = image {
    name = "vllm";
    contents = [ (pkgsCuda.python3.withPackages (_: [ vllm ])) ];
    config.Entrypoint = [
      "python3"
      "-m"
      "vllm.entrypoints.openai.api_server"
    ];
  };

  cpu = {
    redis = image-redis;
    litellm = image-litellm;
    gauntlet = image-gauntlet;
  };

  # Streams each CPU image into the engine and prints what makes the backend use it.
  load-images = writeShellApplication {
    name = "gauntlet-load-images";
    text = lib.concatStrings (
      lib.mapAttrsToList (recipe: img: ''
        ${img} | docker load >&2
        echo "export GAUNTLET_IMAGE_${lib.toUpper recipe}=${img.imageName}:${img.imageTag}"
      '') cpu
    );
  };
in
{
  inherit
    image-redis
    image-litellm
    image-gauntlet
    image-vllm
    load-images
    ;
}
