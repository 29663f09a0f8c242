//! One direction of a forwarded connection: a reader that stamps each chunk with its arrival
//! time, and a writer that asks the toxics what to do with it and does it.
//!
//! The reader runs ahead of the writer (a few chunks, then the channel pushes back and TCP
//! does the rest), so a `latency` delays each chunk from when it arrived rather than from when
//! the previous one left: a stream is shifted, not slowed to one chunk per delay.
//!
//! Why the toxics are read per chunk from an `ArcSwap` snapshot: a chaos case adds a fault
//! while the router holds pooled keep-alive connections open, and the fault must reach those
//! too, at their next chunk. A snapshot load is one atomic operation and shares no lock with
//! the control API, so the data path never waits on a control request, and no registry of
//! connections has to be told about a change. A toxic's per-connection state (its clock, its
//! byte count) lives here, keyed by the toxic's id, so a removed toxic simply stops shaping.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::time::sleep_until;

use super::state::{Shared, affects};
use super::toxic::{Gate, Plan, Slot, Stream};

/// How much one read takes at most.
const CHUNK: usize = 32 * 1024;
/// Chunks the reader may be ahead of the writer.
const AHEAD: usize = 8;

/// How a direction (or, from the connection's view, the connection) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The source's FIN was passed on; the other direction goes on.
    Eof,
    /// A toxic closes the connection (FIN both ways).
    Close,
    /// A toxic, or `POST /reset`, resets it (RST both ways).
    Reset,
    /// A socket failed (a peer's RST, a write to a closed peer): passed on as a RST.
    Broken,
}

/// A forwarded connection as its lanes see it.
pub(crate) struct Conn {
    pub shared: Arc<Shared>,
    /// Its number among forwarded connections (from 0): with the seed, decides toxicity.
    pub number: u64,
}

enum Msg {
    Data(Bytes, Instant),
    Eof(Instant),
    Failed,
}

/// Copies `src` to `dst` through the toxics of `dir`, `first` (bytes already read from `src`)
/// first, until the source ends or a toxic ends the connection.
pub(crate) async fn run(
    src: &mut OwnedReadHalf,
    dst: &mut OwnedWriteHalf,
    first: Bytes,
    dir: Stream,
    conn: &Conn,
) -> End {
    let (tx, rx) = mpsc::channel(AHEAD);
    let reader = read(src, first, tx);
    let writer = Writer::new(conn, dir).run(rx, dst);
    tokio::pin!(reader, writer);
    tokio::select! {
        end = &mut writer => end,
        () = &mut reader => writer.await,
    }
}

async fn read(src: &mut OwnedReadHalf, first: Bytes, tx: mpsc::Sender<Msg>) {
    if !first.is_empty() && tx.send(Msg::Data(first, Instant::now())).await.is_err() {
        return;
    }
    let mut buf = BytesMut::new();
    loop {
        buf.reserve(CHUNK);
        let msg = match src.read_buf(&mut buf).await {
            Ok(0) => Msg::Eof(Instant::now()),
            Ok(_) => Msg::Data(buf.split().freeze(), Instant::now()),
            Err(_) => Msg::Failed,
        };
        let last = !matches!(msg, Msg::Data(..));
        if tx.send(msg).await.is_err() || last {
            return;
        }
    }
}

/// A pending reset (`reset_peer`): when, and which toxic asked for it.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    at: Instant,
    toxic: u64,
}

struct Writer<'c> {
    conn: &'c Conn,
    dir: Stream,
    slots: HashMap<u64, Slot>,
    rng: ChaCha8Rng,
    /// `bandwidth`: when the next byte may go.
    paced_until: Instant,
    deadline: Option<Deadline>,
    changed: watch::Receiver<u64>,
    counter: &'c AtomicU64,
}

impl<'c> Writer<'c> {
    fn new(conn: &'c Conn, dir: Stream) -> Self {
        let lane = match dir {
            Stream::Upstream => 1,
            Stream::Downstream => 2,
        };
        let counters = &conn.shared.counters;
        Self {
            conn,
            dir,
            slots: HashMap::new(),
            rng: ChaCha8Rng::seed_from_u64(conn.shared.seed ^ conn.number.wrapping_mul(4).wrapping_add(lane)),
            paced_until: Instant::now(),
            deadline: None,
            changed: conn.shared.changed.subscribe(),
            counter: match dir {
                Stream::Upstream => &counters.bytes_up,
                Stream::Downstream => &counters.bytes_down,
            },
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Msg>, dst: &mut OwnedWriteHalf) -> End {
        loop {
            let msg = match guarded(&mut self.deadline, self.conn, rx.recv()).await {
                Ok(Some(m)) => m,
                Ok(None) => return End::Broken,
                Err(end) => return end,
            };
            let done = match msg {
                Msg::Data(bytes, arrived) => self.data(bytes, arrived, dst).await,
                Msg::Eof(arrived) => return self.eof(arrived, dst).await.unwrap_or_else(|end| end),
                Msg::Failed => Err(End::Broken),
            };
            if let Err(end) = done {
                return end;
            }
        }
    }

    /// The plan for the next chunk (or the end, `eof`), from the toxics in place now.
    fn plan(&mut self, eof: bool) -> Plan {
        // Marked seen before the load: a change after it wakes a hold (see `admit`).
        self.changed.borrow_and_update();
        let toxics = self.conn.shared.toxics();
        let now = Instant::now();
        let mut plan = Plan::new(now, eof);
        let shared = &self.conn.shared;
        for a in toxics.iter().filter(|a| a.toxic.stream == self.dir) {
            if affects(shared.seed, self.conn.number, &a.toxic.name, a.toxic.toxicity) {
                let slot = self.slots.entry(a.id).or_default();
                a.toxic.shape(a.id, &mut plan, slot, &mut self.rng);
            }
        }
        self.deadline = plan.reset_at.map(|(at, toxic)| Deadline { at, toxic });
        plan
    }

    /// The plan once the chunk may go, holding it while a `timeout` says so.
    async fn admit(&mut self, eof: bool) -> Result<Plan, End> {
        loop {
            let plan = self.plan(eof);
            let until = match plan.gate {
                Gate::Pass => return Ok(plan),
                Gate::Close => return Err(End::Close),
                Gate::Reset => return Err(End::Reset),
                Gate::Hold { until } => until,
            };
            let changed = &mut self.changed;
            let wait = async move {
                match until {
                    Some(t) => tokio::select! {
                        r = changed.changed() => r.is_ok(),
                        () = sleep_until(t.into()) => true,
                    },
                    None => changed.changed().await.is_ok(),
                }
            };
            // Either way the plan is made again: the toxic may be gone, or its time up.
            if !guarded(&mut self.deadline, self.conn, wait).await? {
                return Err(End::Close);
            }
        }
    }

    async fn data(&mut self, mut bytes: Bytes, arrived: Instant, dst: &mut OwnedWriteHalf) -> Result<(), End> {
        let plan = self.admit(false).await?;
        self.sleep_until(arrived + plan.delay).await?;
        if let Some(cap) = plan.cap {
            bytes.truncate(usize::try_from(cap).unwrap_or(usize::MAX));
        }
        let len = bytes.len() as u64;
        while !bytes.is_empty() {
            let n = plan.slicer.map_or(bytes.len(), |s| s.next_size(&mut self.rng));
            let slice = bytes.split_to(n.min(bytes.len()));
            self.write(slice, plan.rate, dst).await?;
            if let Some(s) = plan.slicer.filter(|s| s.delay_us > 0 && !bytes.is_empty()) {
                self.sleep_until(Instant::now() + Duration::from_micros(s.delay_us))
                    .await?;
            }
        }
        for id in &plan.counting {
            self.slots.entry(*id).or_default().passed += len;
        }
        match plan.cap {
            Some(cap) if len >= cap => Err(End::Close),
            _ => Ok(()),
        }
    }

    /// Writes `bytes`, at `rate` bytes per second if given.
    async fn write(&mut self, mut bytes: Bytes, rate: Option<u64>, dst: &mut OwnedWriteHalf) -> Result<(), End> {
        let Some(rate) = rate else {
            return self.write_now(&bytes, dst).await;
        };
        // A tenth of a second's worth at a time: smooth enough, and few timer wake-ups.
        let piece = usize::try_from((rate / 10).max(1)).unwrap_or(usize::MAX);
        while !bytes.is_empty() {
            let part = bytes.split_to(piece.min(bytes.len()));
            self.sleep_until(self.paced_until).await?;
            let start = Instant::now().max(self.paced_until);
            self.write_now(&part, dst).await?;
            let secs = part.len() as f64 / rate as f64;
            self.paced_until = start + Duration::from_secs_f64(secs);
        }
        Ok(())
    }

    async fn write_now(&mut self, bytes: &[u8], dst: &mut OwnedWriteHalf) -> Result<(), End> {
        match guarded(&mut self.deadline, self.conn, dst.write_all(bytes)).await? {
            Ok(()) => {
                self.counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(_) => Err(End::Broken),
        }
    }

    /// The source ended: pass its FIN on, after what the toxics ask.
    async fn eof(&mut self, arrived: Instant, dst: &mut OwnedWriteHalf) -> Result<End, End> {
        let plan = self.admit(true).await?;
        self.sleep_until(arrived + plan.delay).await?;
        if !plan.close_delay.is_zero() {
            self.sleep_until(Instant::now() + plan.close_delay).await?;
        }
        match guarded(&mut self.deadline, self.conn, dst.shutdown()).await? {
            Ok(()) => Ok(End::Eof),
            Err(_) => Err(End::Broken),
        }
    }

    async fn sleep_until(&mut self, t: Instant) -> Result<(), End> {
        if t <= Instant::now() {
            return Ok(());
        }
        guarded(&mut self.deadline, self.conn, sleep_until(t.into())).await
    }
}

/// `fut`, unless the pending reset comes first: then the connection is reset, if the toxic
/// that asked for it is still in place (a removed one's reset is dropped and `fut` goes on).
async fn guarded<F: Future>(deadline: &mut Option<Deadline>, conn: &Conn, fut: F) -> Result<F::Output, End> {
    tokio::pin!(fut);
    while let Some(d) = *deadline {
        tokio::select! {
            out = &mut fut => return Ok(out),
            () = sleep_until(d.at.into()) => {
                if conn.shared.holds(d.toxic) {
                    return Err(End::Reset);
                }
                *deadline = None;
            }
        }
    }
    Ok(fut.await)
}
