//! The latency benchmark's client: sends one captured review at a fixed rate over keep-alive
//! HTTPS/1.1 connections and prints the latency percentiles as one JSON line, beside how fast
//! the machine itself ran meanwhile.
//!
//!     cargo run --release --example latency -- URL BODY CA RATE SECONDS [CONNECTIONS]
//!
//! bench/load.py uses it for the fixed-rate runs instead of oha, which spends about three times
//! the server's CPU per request on the same two cores (`perf sched` while it ran 2,000/s: 2.7 s
//! of CPU in 5 s, most of it oha's), so that its own scheduling delays were most of the tail it
//! measured. This client runs on one thread. Each connection has its own schedule, RATE /
//! CONNECTIONS requests a second, evenly offset from the others; a latency is measured from the
//! moment a request is sent to the moment its whole response has arrived. The first request of
//! each connection (its TLS handshake) is not counted.
//!
//! The machine's speed is measured because on the VM this was written on it is not constant: a
//! fixed 93 µs of arithmetic, on a real-time thread that nothing in the VM can preempt, took up
//! to 1.2 ms in windows of 20–40 ms that came about every 1.4 s, on both CPUs at once, with
//! nothing else running (5 % of the time over 10 s). A server answering 2,000 requests a second
//! cannot keep up while the CPU runs ten times slower, so every request in such a window is late
//! whatever the server does. One probe thread per CPU, pinned and `SCHED_FIFO` where the client
//! may (root, or CAP_SYS_NICE), is due every millisecond to do a fixed 25 µs of work (2.5 % of
//! each CPU, at a priority above the server's). A probe woken more than 0.5 ms late (the VM was
//! not running), or whose work took more than three times the run's median (it ran slowly),
//! marks the machine slow from one probe period before the sample was due to one after it was
//! done. The JSON line
//! gives the percentiles of every request, the share of the run that was slow, and the
//! percentiles of the requests that no slow window touched.
//!
//!     latency --machine SECONDS
//!
//! runs only the probes, for the machine's speed with no load of ours.
//!
//! With `LATENCY_TRACE=FILE` it also writes every request (`request SENT_MS LATENCY_MS`) and
//! every probe sample (`probe CPU DUE_MS LATE_US WORK_US`), in ms from the start of the timed
//! part.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::time::{MissedTickBehavior, interval_at};

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// How often each probe thread times its fixed work, and how long that work takes at full speed.
const PROBE_PERIOD: Duration = Duration::from_millis(1);
const PROBE_WORK: Duration = Duration::from_micros(25);
/// A probe woken this long after it was due means the machine did not run for that long: twenty
/// times the work, and a quarter of the 2 ms the latency target allows.
const STALL: Duration = Duration::from_micros(500);
/// Work that takes this many times its median means the machine ran that much slower.
const SLOWER: u32 = 3;

/// One request: when it was sent and how long until its whole response had arrived.
type Timed = (Instant, Duration);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, seconds] = args.as_slice()
        && flag == "--machine"
    {
        return machine_alone(Duration::from_secs_f64(seconds.parse()?));
    }
    let [url, body, ca, rate, seconds, rest @ ..] = args.as_slice() else {
        return Err(
            "usage: latency URL BODY CA RATE SECONDS [CONNECTIONS] | latency --machine SECONDS"
                .into(),
        );
    };
    let connections: u32 = rest.first().map_or(Ok(16), |c| c.parse())?;
    let rate: f64 = rate.parse()?;
    let duration = Duration::from_secs_f64(seconds.parse()?);
    let body = Bytes::from(std::fs::read(body)?);
    let client = client(ca)?;
    let url: hyper::Uri = url.parse()?;

    // The lead-in opens the connections and calibrates the probes.
    let start = Instant::now() + Duration::from_millis(500);
    let end = start + duration;
    let probes = Probes::start(end);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut requests = runtime.block_on(run(client, url, body, rate, connections, start, end))?;
    if requests.is_empty() {
        return Err("no request was sent".into());
    }
    let probes = probes.join()?;
    requests.sort_unstable_by_key(|r| r.0);
    if let Ok(path) = std::env::var("LATENCY_TRACE") {
        trace(&path, start, &requests, &probes)?;
    }

    let slow = Slow::of(&probes);
    let slow = windows(&probes, |s| slow.any(s), start, end);
    let untouched: Vec<Duration> = requests
        .iter()
        .filter(|(sent, took)| {
            !slow
                .iter()
                .any(|(from, to)| *sent < *to && *sent + *took > *from)
        })
        .map(|r| r.1)
        .collect();
    let all: Vec<Duration> = requests.iter().map(|r| r.1).collect();
    let line = serde_json::json!({
        "requests": all.len(),
        "rps": round(all.len() as f64 / duration.as_secs_f64()),
        "p50": percentile(&all, 0.5),
        "p90": percentile(&all, 0.9),
        "p99": percentile(&all, 0.99),
        "p99.9": percentile(&all, 0.999),
        "max": percentile(&all, 1.0),
        "machine": machine(&probes, start, end),
        "untouched": {
            "requests": untouched.len(),
            "p50": percentile(&untouched, 0.5),
            "p99": percentile(&untouched, 0.99),
            "p99.9": percentile(&untouched, 0.999),
            "max": percentile(&untouched, 1.0),
        },
    });
    println!("{line}");
    Ok(())
}

/// Only the probes, for SECONDS: how the machine runs with no load of ours.
fn machine_alone(duration: Duration) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now() + Duration::from_millis(300);
    let end = start + duration;
    let probes = Probes::start(end).join()?;
    println!(
        "{}",
        serde_json::json!({ "machine": machine(&probes, start, end) })
    );
    Ok(())
}

/// What the probes saw, as the JSON line gives it.
fn machine(probes: &[Probe], start: Instant, end: Instant) -> serde_json::Value {
    let slow = Slow::of(probes);
    let percent = |windows: &[(Instant, Instant)]| {
        let time: Duration = windows.iter().map(|(from, to)| *to - *from).sum();
        round(100.0 * time.as_secs_f64() / (end - start).as_secs_f64())
    };
    let any = windows(probes, |s| slow.any(s), start, end);
    let cpu = windows(probes, |s| slow.cpu(s), start, end);
    serde_json::json!({
        "probe": if probes.iter().all(|p| p.fifo) { "fifo" } else { "normal priority" },
        "workUs": round(slow.normal.as_secs_f64() * 1e6),
        "slowPercent": percent(&any),
        "slowWindows": any.len(),
        "slowCpuPercent": percent(&cpu),
    })
}

async fn run(
    client: Client<Https, Full<Bytes>>,
    url: hyper::Uri,
    body: Bytes,
    rate: f64,
    connections: u32,
    start: Instant,
    end: Instant,
) -> Result<Vec<Timed>, String> {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let period = Duration::from_secs_f64(f64::from(connections) / rate);
    let mut tasks = Vec::new();
    for connection in 0..connections {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        let requests = requests.clone();
        let offset = period.mul_f64(f64::from(connection) / f64::from(connections));
        tasks.push(tokio::spawn(async move {
            // Opens this connection (the TLS handshake) before the timed part.
            send(&client, &url, &body).await?;
            let mut ticks = interval_at((start + offset).into(), period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
            let mut own = Vec::new();
            while ticks.tick().await.into_std() < end {
                own.push(send(&client, &url, &body).await?);
            }
            requests.lock().unwrap().extend(own);
            Ok::<_, String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok(std::mem::take(&mut *requests.lock().unwrap()))
}

/// One probe thread on each CPU.
struct Probes(Vec<std::thread::JoinHandle<Probe>>);

impl Probes {
    fn start(end: Instant) -> Self {
        Self(
            (0..online_cpus())
                .map(|cpu| std::thread::spawn(move || probe(cpu, end)))
                .collect(),
        )
    }

    fn join(self) -> Result<Vec<Probe>, &'static str> {
        self.0
            .into_iter()
            .map(|p| p.join().map_err(|_| "a probe thread panicked"))
            .collect()
    }
}

/// What one probe thread saw.
struct Probe {
    fifo: bool,
    samples: Vec<Sample>,
}

/// One time the probe did its fixed work.
struct Sample {
    due: Instant,
    woke: Instant,
    done: Instant,
}

impl Sample {
    fn late(&self) -> Duration {
        self.woke.saturating_duration_since(self.due)
    }

    fn work(&self) -> Duration {
        self.done.saturating_duration_since(self.woke)
    }
}

/// How to tell a slow sample, from the median time the work took in the run.
#[derive(Clone, Copy)]
struct Slow {
    normal: Duration,
}

impl Slow {
    fn of(probes: &[Probe]) -> Self {
        let normal = median(
            probes
                .iter()
                .flat_map(|p| p.samples.iter().map(Sample::work)),
        );
        Self { normal }
    }

    /// The machine stalled or ran slowly around this sample.
    fn any(self, sample: &Sample) -> bool {
        sample.late() > STALL || self.cpu(sample)
    }

    /// The machine ran the work itself slowly.
    fn cpu(self, sample: &Sample) -> bool {
        sample.work() > self.normal * SLOWER
    }
}

/// Does the fixed work on `cpu` every `PROBE_PERIOD` until `end`; a sample is when it was due
/// and how long from then until the work was done, so that both a late wake-up (the CPU was
/// not running the VM) and slow work (it ran it slowly) count.
fn probe(cpu: usize, end: Instant) -> Probe {
    let fifo = pin_and_raise(cpu);
    let iterations = calibrate();
    let mut samples = Vec::new();
    let mut due = Instant::now();
    while due < end {
        due += PROBE_PERIOD;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let woke = Instant::now();
        work(iterations);
        samples.push(Sample {
            due,
            woke,
            done: Instant::now(),
        });
        // After a stall, start again from now rather than catch up in a burst.
        due = due.max(Instant::now() - PROBE_PERIOD);
    }
    Probe { fifo, samples }
}

/// Pins the calling thread to `cpu` and makes it real-time, so that nothing in the machine but
/// interrupts comes before it: a slow sample is then the machine's, not a neighbour's.
fn pin_and_raise(cpu: usize) -> bool {
    // SAFETY: plain system calls on the calling thread (pid 0) with values built here.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        let param = libc::sched_param { sched_priority: 50 };
        libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0
    }
}

fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(online).unwrap_or(1).max(1)
}

/// Iterations of `work` that take `PROBE_WORK` at full speed: the fastest of many tries, since
/// a try can only be slowed down, never sped up.
fn calibrate() -> u64 {
    const TRY: u64 = 10_000;
    let fastest = (0..50)
        .map(|_| {
            let at = Instant::now();
            work(TRY);
            at.elapsed()
        })
        .min()
        .unwrap_or(PROBE_WORK)
        .max(Duration::from_nanos(1));
    (TRY as f64 * PROBE_WORK.as_secs_f64() / fastest.as_secs_f64()) as u64
}

fn work(iterations: u64) {
    let mut x = 1u64;
    for _ in 0..iterations {
        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
    }
}

/// The parts of the timed run around the samples `slow` picks, merged and in order.
fn windows(
    probes: &[Probe],
    slow: impl Fn(&Sample) -> bool,
    start: Instant,
    end: Instant,
) -> Vec<(Instant, Instant)> {
    let mut windows: Vec<(Instant, Instant)> = probes
        .iter()
        .flat_map(|p| p.samples.iter())
        .filter(|s| slow(s))
        .map(|s| (s.due - PROBE_PERIOD, s.done + PROBE_PERIOD))
        .filter(|(from, to)| *to > start && *from < end)
        .map(|(from, to)| (from.max(start), to.min(end)))
        .collect();
    windows.sort_unstable();
    let mut merged: Vec<(Instant, Instant)> = Vec::new();
    for (from, to) in windows {
        match merged.last_mut() {
            Some(last) if from <= last.1 => last.1 = last.1.max(to),
            _ => merged.push((from, to)),
        }
    }
    merged
}

fn median(durations: impl Iterator<Item = Duration>) -> Duration {
    let mut all: Vec<Duration> = durations.collect();
    all.sort_unstable();
    all.get(all.len() / 2).copied().unwrap_or(PROBE_WORK)
}

/// The latency at quantile `q` in ms (null when no request is left).
fn percentile(latencies: &[Duration], q: f64) -> Option<f64> {
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    let i = ((sorted.len() as f64) * q) as usize;
    let at = sorted.get(i.min(sorted.len().checked_sub(1)?))?;
    Some(round(at.as_secs_f64() * 1000.0))
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn trace(path: &str, start: Instant, requests: &[Timed], probes: &[Probe]) -> std::io::Result<()> {
    use std::io::Write;
    let ms = |at: Instant| {
        at.checked_duration_since(start)
            .map_or_else(|| -(start - at).as_secs_f64(), |d| d.as_secs_f64())
            * 1000.0
    };
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for (sent, took) in requests {
        writeln!(
            out,
            "request {:.3} {:.3}",
            ms(*sent),
            took.as_secs_f64() * 1000.0
        )?;
    }
    for (cpu, probe) in probes.iter().enumerate() {
        for sample in &probe.samples {
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            let (late, work) = (us(sample.late()), us(sample.work()));
            writeln!(out, "probe {cpu} {:.3} {late:.1} {work:.1}", ms(sample.due))?;
        }
    }
    out.flush()
}

fn client(ca: &str) -> Result<Client<Https, Full<Bytes>>, Box<dyn std::error::Error>> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca)?;
    for cert in certificates(&pem)? {
        roots.add(cert)?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

fn certificates(
    pem: &[u8],
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, rustls::pki_types::pem::Error> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::pem_slice_iter(pem).collect()
}

/// Sends the review once: when, and the time until its whole response had arrived.
async fn send(
    client: &Client<Https, Full<Bytes>>,
    url: &hyper::Uri,
    body: &Bytes,
) -> Result<Timed, String> {
    let request = hyper::Request::post(url.clone())
        .header("content-type", "application/json")
        .body(Full::new(body.clone()))
        .map_err(|e| e.to_string())?;
    let sent = Instant::now();
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("answered {status}"));
    }
    Ok((sent, sent.elapsed()))
}
