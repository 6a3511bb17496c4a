//! The loads: wrk (HTTP/1.1) and h2load (HTTP/2 prior knowledge) at
//! saturation, each bounded by its own duration and killed past a grace
//! period; and a paced, open-loop HTTP/1.1 generator for latency at a
//! fixed rate (wrk2 is not in Debian, and h2load reports no percentiles).

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What a saturation run measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Saturation {
    /// Completed requests per second.
    pub rps: f64,
    /// Completed requests.
    pub requests: u64,
    /// Requests that failed or got a non-2xx answer.
    pub errors: u64,
}

/// Runs `program args`, killing it if it outlives `limit`; its stdout.
fn run_bounded(program: &str, args: &[String], limit: Duration) -> Result<String, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}; scripts/shim-bench.sh installs it"))?;
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{program} still running after {limit:?}; killed"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("{program}: {e}")),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "{program} {args:?} failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(stdout)
}

/// wrk with one thread and `connections` keep-alive connections for `secs`.
pub fn wrk(addr: SocketAddr, connections: u32, secs: u64) -> Result<Saturation, String> {
    let args = [
        "-t1".to_string(),
        format!("-c{connections}"),
        format!("-d{secs}s"),
        format!("http://{addr}/"),
    ];
    let out = run_bounded("wrk", &args, Duration::from_secs(secs + 15))?;
    parse_wrk(&out).ok_or_else(|| format!("cannot read wrk's output:\n{out}"))
}

/// Reads `N requests in`, `Requests/sec:`, non-2xx and socket errors.
pub fn parse_wrk(out: &str) -> Option<Saturation> {
    let mut s = Saturation::default();
    let mut seen_rps = false;
    for line in out.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            s.rps = v.trim().parse().ok()?;
            seen_rps = true;
        } else if let Some((n, _)) = line.split_once(" requests in ") {
            s.requests = n.trim().parse().ok()?;
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            s.errors += v.trim().parse::<u64>().ok()?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            s.errors += v
                .split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    seen_rps.then_some(s)
}

/// h2load with one thread, `clients` connections of `streams` concurrent
/// streams each, for `secs`.
pub fn h2load(
    addr: SocketAddr,
    clients: u32,
    streams: u32,
    secs: u64,
) -> Result<Saturation, String> {
    let args = [
        "-t1".to_string(),
        format!("-c{clients}"),
        format!("-m{streams}"),
        format!("-D{secs}"),
        format!("http://{addr}/"),
    ];
    let out = run_bounded("h2load", &args, Duration::from_secs(secs + 15))?;
    parse_h2load(&out).ok_or_else(|| format!("cannot read h2load's output:\n{out}"))
}

/// Reads `finished in Xs, N req/s` and the `requests:` counters.
pub fn parse_h2load(out: &str) -> Option<Saturation> {
    let mut s = Saturation::default();
    let mut seen = (false, false);
    for line in out.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            let rps = rest.split(", ").nth(1)?.strip_suffix(" req/s")?;
            s.rps = rps.trim().parse().ok()?;
            seen.0 = true;
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            // "100 total, 100 started, 98 done, 97 succeeded, 1 failed, 1 errored, 0 timeout"
            let count = |what: &str| {
                rest.split(", ").find_map(|kv| {
                    let (n, name) = kv.split_once(' ')?;
                    (name == what).then(|| n.parse::<u64>().ok())?
                })
            };
            s.requests = count("succeeded")?;
            s.errors = count("failed")? + count("errored")? + count("timeout")?;
            seen.1 = true;
        } else if let Some(rest) = line.strip_prefix("status codes: ") {
            // "N 2xx, N 3xx, N 4xx, N 5xx": h2load counts a 503 as succeeded.
            let bad: u64 = rest
                .split(", ")
                .filter(|kv| kv.ends_with("4xx") || kv.ends_with("5xx"))
                .filter_map(|kv| kv.split(' ').next()?.parse::<u64>().ok())
                .sum();
            s.errors += bad;
            s.requests = s.requests.saturating_sub(bad);
        }
    }
    (seen.0 && seen.1).then_some(s)
}

/// What the paced run measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Paced {
    /// Requests answered with 200.
    pub ok: u64,
    /// Requests that failed, timed out or got another status.
    pub errors: u64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest request.
    pub max: Duration,
}

/// Sends `rate` requests per second for `duration` over `connections`
/// HTTP/1.1 keep-alive connections, open loop: connection `i` owns the
/// requests scheduled at `(i + k * connections) / rate`.
///
/// Latency counts from when the request was due if its connection was
/// still busy with the one before (the wait is the server's doing, which
/// is what wrk2 corrects for), and from when it was actually sent if the
/// connection was idle (so the timer's own millisecond granularity is not
/// billed to the server).
pub async fn paced(addr: SocketAddr, rate: u32, duration: Duration, connections: u32) -> Paced {
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let total = (f64::from(rate) * duration.as_secs_f64()) as u64;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let tasks: Vec<_> = (0..u64::from(connections))
        .map(|i| {
            let times: Vec<tokio::time::Instant> = (i..total)
                .step_by(connections as usize)
                .map(|k| start + interval * u32::try_from(k).unwrap_or(u32::MAX))
                .collect();
            tokio::spawn(connection(addr, times))
        })
        .collect();
    let mut lat = Vec::with_capacity(total as usize);
    let mut result = Paced::default();
    for t in tasks {
        if let Ok((l, errors)) = t.await {
            result.errors += errors;
            lat.extend(l);
        }
    }
    lat.sort_unstable();
    result.ok = lat.len() as u64;
    let pct = |p: f64| {
        let idx = ((lat.len() as f64 * p).ceil() as usize).saturating_sub(1);
        lat.get(idx).copied().unwrap_or_default()
    };
    result.p50 = pct(0.50);
    result.p99 = pct(0.99);
    result.max = lat.last().copied().unwrap_or_default();
    result
}

/// Each request's own bound; past it the request is an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

type Sender = http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Option<Sender> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (tx, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(conn);
    Some(tx)
}

/// One connection's share: its schedule in, latencies and errors out.
async fn connection(addr: SocketAddr, times: Vec<tokio::time::Instant>) -> (Vec<Duration>, u64) {
    let mut lat = Vec::with_capacity(times.len());
    let mut errors = 0;
    let mut sender = connect(addr).await;
    let mut free_at = tokio::time::Instant::now();
    for due in times {
        tokio::time::sleep_until(due).await;
        let sent = tokio::time::Instant::now();
        let from = if free_at > due { due } else { sent };
        let ok = match sender.as_mut() {
            Some(tx) => one(tx, addr).await,
            None => false,
        };
        let done = tokio::time::Instant::now();
        free_at = done;
        if ok {
            lat.push(done - from);
        } else {
            errors += 1;
            sender = connect(addr).await;
        }
    }
    (lat, errors)
}

async fn one(tx: &mut Sender, addr: SocketAddr) -> bool {
    let req = match Request::get("/")
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
    {
        Ok(r) => r,
        Err(_) => return false,
    };
    let exchange = async {
        tx.ready().await.ok()?;
        let resp = tx.send_request(req).await.ok()?;
        let status = resp.status();
        resp.into_body().collect().await.ok()?;
        Some(status.is_success())
    };
    matches!(
        tokio::time::timeout(REQUEST_TIMEOUT, exchange).await,
        Ok(Some(true))
    )
}

/// One GET with a fresh connection: the row's path works before it is
/// measured.
pub async fn probe(addr: SocketAddr) -> Result<(), String> {
    let mut tx = connect(addr)
        .await
        .ok_or_else(|| format!("cannot connect to {addr}"))?;
    let req = Request::get("/")
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(REQUEST_TIMEOUT, tx.send_request(req))
        .await
        .map_err(|_| format!("GET http://{addr}/ timed out"))?
        .map_err(|e| format!("GET http://{addr}/: {e}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if status.as_u16() != 200 {
        return Err(format!(
            "GET http://{addr}/ answered {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let out = "Running 5s test @ http://127.0.0.1:1/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   1.00ms  200.00us   5.00ms   90.00%
    Req/Sec    30.00k     1.00k   32.00k    80.00%
  150123 requests in 5.00s, 10.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  30024.60
Transfer/sec:      2.00MB
";
        assert_eq!(
            parse_wrk(out),
            Some(Saturation {
                rps: 30024.60,
                requests: 150123,
                errors: 7
            })
        );
        assert_eq!(parse_wrk("wrk: error"), None);
    }

    #[test]
    fn h2load_output_is_read_and_5xx_are_errors() {
        let out = "starting benchmark...
finished in 5.00s, 40000.20 req/s, 1.20MB/s
requests: 200001 total, 200100 started, 200001 done, 200001 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 199990 2xx, 0 3xx, 0 4xx, 11 5xx
";
        assert_eq!(
            parse_h2load(out),
            Some(Saturation {
                rps: 40000.20,
                requests: 199990,
                errors: 11
            })
        );
        assert_eq!(parse_h2load("finished in 1s"), None);
    }

    #[tokio::test]
    async fn paced_load_counts_every_request_against_a_server() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let server = std::thread::spawn(move || crate::upstream::run(addr.port()));
        crate::procs::wait_listening(addr, Duration::from_secs(5)).unwrap();
        probe(addr).await.unwrap();
        let r = paced(addr, 200, Duration::from_millis(500), 4).await;
        assert_eq!((r.ok, r.errors), (100, 0), "{r:?}");
        assert!(r.p50 <= r.p99 && r.p99 <= r.max && r.max > Duration::ZERO);
        drop(server);
    }
}
