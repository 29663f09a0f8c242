//! The Docker backend: every service a container (the simulator and the ledger sink too, from
//! the gauntlet image, so the stack is the same inside and out) on one network of the run's
//! own, reachable from the others by its service name and from the cases through a port
//! published on 127.0.0.1. Logs are followed into the run's log files; the end of a log
//! stream is how a container's exit is noticed.
//!
//! Everything is labelled with the run id: teardown (normal, `Drop`, the signal handler)
//! removes by label, so a container created a moment before an interrupt still goes, and
//! `gauntlet down --all` finds what a killed run left.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, DeviceRequest, EndpointSettings, HostConfig, NetworkConnectRequest, NetworkCreateRequest,
    NetworkDisconnectRequest, NetworkingConfig, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, LogsOptionsBuilder, RestartContainerOptionsBuilder,
};
use futures_util::StreamExt;

use super::super::endpoints::Endpoint;
use super::super::engine::{self, OWNER_LABEL, RUN_LABEL, SERVICE_LABEL};
use super::super::image;
use super::super::manifest::{Builtin, Manifest, ServiceSpec};
use super::super::teardown::Teardown;
use super::{Chaos, Launch, Launched};
use crate::error::RunError;

/// Every service listens on this port inside its own network namespace.
pub const SERVICE_PORT: u16 = 8000;
/// Where the run's private files folder (rendered router config, simulator config) appears
/// inside every container, read-only.
const FILES_INSIDE: &str = "/run/gauntlet";

pub fn file_inside(host: &Path) -> String {
    let name = host
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{FILES_INSIDE}/{name}")
}

/// The command of a builtin's container (the gauntlet image), listening on
/// [`SERVICE_PORT`]; `sim_config` is the simulator config's path inside the container.
pub fn builtin_command(kind: Builtin, sim_config: Option<&str>) -> Vec<String> {
    let mut argv: Vec<String> = vec![image::GAUNTLET_BIN.into()];
    argv.push(match kind {
        Builtin::Sim => "sim".into(),
        Builtin::LedgerSink => "sink".into(),
    });
    argv.extend(["--listen".into(), format!("0.0.0.0:{SERVICE_PORT}")]);
    if let Some(c) = sim_config {
        argv.extend(["--config".into(), c.to_owned()]);
    }
    argv
}

/// Why each service stopped, stamped with the generation of the container start it ended, so
/// the log follower of a container that was restarted cannot report the old exit.
type Exits = Arc<Mutex<BTreeMap<String, (u64, Option<String>)>>>;

pub struct Containers {
    docker: Docker,
    run: String,
    network: String,
    files: PathBuf,
    images: BTreeMap<String, String>,
    started: Vec<(String, String)>,
    exits: Exits,
    followers: Vec<tokio::task::JoinHandle<()>>,
    teardown: Teardown,
    stopped: bool,
}

impl Containers {
    pub async fn open(files: &Path, teardown: &Teardown) -> Result<Self, RunError> {
        let docker = engine::connect().await?;
        let run = crate::random::random_hex(6);
        let network = format!("gauntlet-{run}");
        // Recorded before anything exists: an interrupt from here on sweeps by label.
        teardown.docker_run(&run);
        docker
            .create_network(NetworkCreateRequest {
                name: network.clone(),
                driver: Some("bridge".into()),
                labels: Some(labels(&run, None)),
                ..Default::default()
            })
            .await
            .map_err(|e| RunError::stack(format!("cannot create Docker network {network}: {e}")))?;
        Ok(Self {
            docker,
            run,
            network,
            files: files.to_owned(),
            images: BTreeMap::new(),
            started: Vec::new(),
            exits: Arc::default(),
            followers: Vec::new(),
            teardown: teardown.clone(),
            stopped: false,
        })
    }

    /// Makes every image the services need available (built from a recipe or pulled), and
    /// refuses a GPU request the engine cannot satisfy before anything starts.
    pub async fn prepare(&mut self, m: &Manifest, services: &[String]) -> Result<(), RunError> {
        let mut ready: BTreeMap<String, String> = BTreeMap::new();
        for name in services {
            let spec = &m.services[name];
            let image = m.image_of(name)?;
            let key = format!("{image:?}");
            let reference = match ready.get(&key) {
                Some(r) => r.clone(),
                None => {
                    let r = image::ensure(&self.docker, &image)
                        .await
                        .map_err(|e| RunError::stack(format!("service '{name}': {e}")))?;
                    tracing::info!(service = %name, image = %r.reference, built = r.built, secs = r.took.as_secs_f64(), "image ready");
                    ready.insert(key, r.reference.clone());
                    r.reference
                }
            };
            if let Some(gpu) = &spec.gpu {
                self.check_gpu(name, gpu).await?;
            }
            self.images.insert(name.clone(), reference);
        }
        Ok(())
    }

    async fn check_gpu(&self, name: &str, gpu: &str) -> Result<(), RunError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| RunError::stack(format!("service '{name}': cannot ask the engine about GPUs: {e}")))?;
        let runtimes: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
        let cdi = info.cdi_spec_dirs.unwrap_or_default();
        let ok = if gpu.starts_with("cdi:") {
            !cdi.is_empty()
        } else {
            runtimes.iter().any(|r| r == "nvidia") || crate::stack::gpu::nvidia_driver_present()
        };
        if ok {
            return Ok(());
        }
        Err(RunError::stack(format!(
            "service '{name}' asks for a GPU (gpu = {gpu:?}) but this Docker Engine cannot give one: \
             its runtimes are [{}]{}, and no NVIDIA driver was found on the host; install the NVIDIA \
             driver and Container Toolkit (nvidia-ctk runtime configure --runtime=docker), or leave \
             the GPU lane out (the simulator stands in for vLLM)",
            runtimes.join(", "),
            if cdi.is_empty() { ", no CDI spec folders" } else { "" }
        )))
    }

    pub async fn launch(&mut self, l: &Launch<'_>, log: &Path) -> Result<Launched, RunError> {
        self.create_and_start(&l.service, l.spec, l.argv.clone(), &l.env, l.port, l.scheme, log)
            .await
    }

    pub async fn builtin(
        &mut self,
        name: &str,
        spec: &ServiceSpec,
        kind: Builtin,
        sim: &crate::sim::SimConfig,
        log: &Path,
    ) -> Result<Launched, RunError> {
        let mut config = None;
        if kind == Builtin::Sim {
            let path = self.files.join(format!("{name}.sim.json"));
            let text = serde_json::to_string_pretty(sim).expect("simulator config serializes");
            super::super::write_private(&path, &text)?;
            config = Some(file_inside(&path));
        }
        let argv = builtin_command(kind, config.as_deref());
        self.create_and_start(name, spec, argv, &[], SERVICE_PORT, "http", log)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_and_start(
        &mut self,
        service: &str,
        spec: &ServiceSpec,
        argv: Vec<String>,
        env: &[(String, String)],
        port: u16,
        scheme: &str,
        log: &Path,
    ) -> Result<Launched, RunError> {
        let image = self
            .images
            .get(service)
            .cloned()
            .ok_or_else(|| RunError::stack(format!("service '{service}': no image prepared")))?;
        let cname = format!("gauntlet-{}-{service}", self.run);
        let port_key = format!("{port}/tcp");
        // A host port of its own, not the engine's pick: the engine picks again on every
        // restart, and every client holding the old address (a case's endpoints, the run's
        // cooldown drain) would then reach nothing after a chaos restart.
        let host_port = crate::stack::free_port()?;
        let mut host = HostConfig {
            port_bindings: Some(HashMap::from([(
                port_key.clone(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(host_port.to_string()),
                }]),
            )])),
            binds: Some(vec![format!("{}:{FILES_INSIDE}:ro", self.files.display())]),
            ..Default::default()
        };
        if let Some(limits) = &spec.limits {
            host.memory = limits.memory_mb.map(|mb| (mb * 1024 * 1024) as i64);
            host.nano_cpus = limits.cpus.map(|c| (c * 1e9) as i64);
            host.shm_size = limits.shm_mb.map(|mb| (mb * 1024 * 1024) as i64);
        }
        if let Some(gpu) = &spec.gpu {
            host.device_requests = Some(vec![device_request(gpu)]);
        }
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            cmd: Some(argv),
            env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            exposed_ports: Some(vec![port_key.clone()]),
            labels: Some(labels(&self.run, Some(service))),
            host_config: Some(host),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    self.network.clone(),
                    EndpointSettings {
                        aliases: Some(vec![service.to_owned()]),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(Some(CreateContainerOptionsBuilder::new().name(&cname).build()), body)
            .await
            .map_err(|e| {
                RunError::stack(format!(
                    "service '{service}': cannot create a container from {image}: {e}"
                ))
            })?;
        let id = created.id;
        self.started.push((service.to_owned(), id.clone()));
        std::fs::File::create(log).map_err(|e| RunError::stack(format!("cannot create {}: {e}", log.display())))?;
        let generation = self.next_generation(service);
        self.docker
            .start_container(&id, None)
            .await
            .map_err(|e| RunError::stack(format!("service '{service}': cannot start its container: {e}")))?;
        self.follow(service, &id, log, generation, 0);
        let endpoint = self.endpoint_of(service, &id, &port_key, scheme).await?;
        Ok(Launched {
            internal_url: format!("{scheme}://{service}:{port}"),
            endpoint,
            log: Some(log.to_owned()),
        })
    }

    /// The host side of a container's published port, read back from the engine (it picks a
    /// free one at every start).
    async fn endpoint_of(&self, service: &str, id: &str, port_key: &str, scheme: &str) -> Result<Endpoint, RunError> {
        let info = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| RunError::stack(format!("service '{service}': cannot inspect its container: {e}")))?;
        let running = info.state.as_ref().and_then(|s| s.running);
        let port = info
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|mut p| p.remove(port_key))
            .flatten()
            .and_then(|b| b.into_iter().find_map(|b| b.host_port))
            .and_then(|p| p.parse::<u16>().ok())
            // It exited before its port could be read (a container failing at once, on a busy
            // engine): no port, and the health wait reports the exit with its last lines, as it
            // does for any death at start-up.
            .or((running == Some(false)).then_some(0))
            .ok_or_else(|| {
                let why = self.exited(service).unwrap_or_else(|| "no published port".into());
                RunError::stack(format!(
                    "service '{service}': its container has no host port for {port_key} ({why})"
                ))
            })?;
        Ok(Endpoint {
            url: format!("{scheme}://127.0.0.1:{port}"),
            host: "127.0.0.1".into(),
            port,
            pid: None,
            container: Some(id.to_owned()),
        })
    }

    fn next_generation(&self, service: &str) -> u64 {
        let mut exits = self.exits.lock().unwrap_or_else(|e| e.into_inner());
        let e = exits.entry(service.to_owned()).or_insert((0, None));
        e.0 += 1;
        e.1 = None;
        e.0
    }

    /// Appends the container's output to `log` until it stops; then records why it stopped.
    fn follow(&mut self, service: &str, id: &str, log: &Path, generation: u64, since: i32) {
        let docker = self.docker.clone();
        let (service, id, log, exits) = (service.to_owned(), id.to_owned(), log.to_owned(), self.exits.clone());
        self.followers.push(tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let opts = LogsOptionsBuilder::new()
                .follow(true)
                .stdout(true)
                .stderr(true)
                .since(since)
                .build();
            if let Ok(mut out) = tokio::fs::OpenOptions::new().append(true).create(true).open(&log).await {
                let mut stream = docker.logs(&id, Some(opts));
                while let Some(Ok(chunk)) = stream.next().await {
                    let _ = out.write_all(&chunk.into_bytes()).await;
                }
                let _ = out.flush().await;
            }
            let why = match docker.inspect_container(&id, None).await {
                Ok(info) => {
                    let state = info.state.unwrap_or_default();
                    (!state.running.unwrap_or(false)).then(|| {
                        let oom = if state.oom_killed.unwrap_or(false) {
                            ", killed for running out of memory"
                        } else {
                            ""
                        };
                        format!("exit status {}{oom}", state.exit_code.unwrap_or(-1))
                    })
                }
                Err(_) => Some("its container is gone".into()),
            };
            if let Some(why) = why {
                let mut exits = exits.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(e) = exits.get_mut(&service).filter(|e| e.0 == generation) {
                    e.1 = Some(why);
                }
            }
        }));
    }

    pub fn exited(&self, name: &str) -> Option<String> {
        let exits = self.exits.lock().unwrap_or_else(|e| e.into_inner());
        exits.get(name).and_then(|e| e.1.clone())
    }

    fn container(&self, name: &str) -> Result<String, RunError> {
        self.started
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| id.clone())
            .ok_or_else(|| RunError::usage(format!("chaos on '{name}': no such service in this stack")))
    }

    pub async fn chaos(&mut self, name: &str, what: Chaos, log: &Path) -> Result<Option<Endpoint>, RunError> {
        let id = self.container(name)?;
        let d = &self.docker;
        let failed = |e: bollard::errors::Error| RunError::stack(format!("chaos {what} on '{name}': {e}"));
        match what {
            Chaos::Pause => d.pause_container(&id).await.map_err(failed)?,
            Chaos::Unpause => d.unpause_container(&id).await.map_err(failed)?,
            Chaos::Kill => d
                .kill_container(&id, Some(KillContainerOptionsBuilder::new().signal("SIGKILL").build()))
                .await
                .map_err(failed)?,
            Chaos::Disconnect => d
                .disconnect_network(
                    &self.network,
                    NetworkDisconnectRequest {
                        container: id.clone(),
                        force: Some(true),
                    },
                )
                .await
                .map_err(failed)?,
            Chaos::Connect => d
                .connect_network(
                    &self.network,
                    NetworkConnectRequest {
                        container: id.clone(),
                        endpoint_config: Some(EndpointSettings {
                            aliases: Some(vec![name.to_owned()]),
                            ..Default::default()
                        }),
                    },
                )
                .await
                .map_err(failed)?,
            Chaos::Restart => {
                let generation = self.next_generation(name);
                let since = chrono::Utc::now().timestamp() as i32;
                self.docker
                    .restart_container(&id, Some(RestartContainerOptionsBuilder::new().t(2).build()))
                    .await
                    .map_err(failed)?;
                self.follow(name, &id, log, generation, since);
                let scheme = if self.images.get(name).is_some_and(|i| i.contains("/redis:")) {
                    "redis"
                } else {
                    "http"
                };
                let port_key = self
                    .port_key(&id)
                    .await
                    .unwrap_or_else(|| format!("{SERVICE_PORT}/tcp"));
                return self.endpoint_of(name, &id, &port_key, scheme).await.map(Some);
            }
        }
        Ok(None)
    }

    async fn port_key(&self, id: &str) -> Option<String> {
        let info = self.docker.inspect_container(id, None).await.ok()?;
        info.config?.exposed_ports?.into_iter().next()
    }

    /// Removes every container and the network of this run.
    pub async fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        // The followers write what the containers said into the run's logs: kill the
        // containers first, which ends their log streams, and let the followers drain them
        // (bounded) before anything is removed; aborted at once, a short run's last lines
        // were lost (an empty router.log was seen under load).
        for (_, id) in &self.started {
            let kill = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                self.docker.kill_container(id, Some(kill)),
            )
            .await;
        }
        let followers: Vec<_> = self.followers.drain(..).collect();
        let aborts: Vec<_> = followers.iter().map(|f| f.abort_handle()).collect();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(3),
            futures_util::future::join_all(followers),
        )
        .await;
        for a in aborts {
            a.abort();
        }
        let _ = engine::sweep_run(&self.docker, &self.run).await;
        self.teardown.docker_done(&self.run);
    }

    pub fn stop_now(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        for f in self.followers.drain(..) {
            f.abort();
        }
        let run = self.run.clone();
        engine::blocking(move |d| Box::pin(async move { engine::sweep_run(&d, &run).await }));
        self.teardown.docker_done(&self.run);
    }
}

fn device_request(gpu: &str) -> DeviceRequest {
    let caps = Some(vec![vec!["gpu".to_owned()]]);
    match gpu.strip_prefix("cdi:") {
        Some(device) => DeviceRequest {
            driver: Some("cdi".into()),
            device_ids: Some(vec![device.to_owned()]),
            capabilities: caps,
            ..Default::default()
        },
        None => DeviceRequest {
            driver: Some("nvidia".into()),
            count: Some(gpu.parse::<i64>().unwrap_or(-1)),
            capabilities: caps,
            ..Default::default()
        },
    }
}

fn labels(run: &str, service: Option<&str>) -> HashMap<String, String> {
    let mut l = HashMap::from([
        (RUN_LABEL.to_owned(), run.to_owned()),
        (OWNER_LABEL.to_owned(), std::process::id().to_string()),
    ]);
    if let Some(s) = service {
        l.insert(SERVICE_LABEL.to_owned(), s.to_owned());
    }
    l
}
