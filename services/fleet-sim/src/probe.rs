//! What a process costs, read from /proc: resident memory and CPU time (Linux only), and
//! counters from a Prometheus `/metrics` page.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Clock ticks per second of /proc's CPU times: USER_HZ, 100 on every Linux ABI.
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of a process.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// User + system CPU time so far.
    pub cpu: Duration,
    /// Open file descriptors.
    pub fds: u64,
}

/// Reads process `pid` ("self" for this one).
pub fn sample(pid: &str) -> anyhow::Result<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status (is process {pid} running?)"))?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        bail!("unexpected /proc/{pid}/stat");
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; here (state is field 3) at 11 and 12.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("unexpected /proc/{pid}/stat"))
    };
    let total = ticks(11)? + ticks(12)?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count() as u64)
        .unwrap_or(0);
    Ok(Sample {
        rss_kib,
        cpu: Duration::from_secs_f64(total as f64 / TICKS_PER_SECOND),
        fds,
    })
}

/// This process's soft limit on open files.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The counters and gauges of a Prometheus text page at `url` (`http://host:port/path`),
/// summed over labels: name -> value.
pub async fn scrape(url: &url::Url) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut values = BTreeMap::new();
    for (series, value) in scrape_series(url).await? {
        let name = series.split('{').next().unwrap_or(&series).trim();
        *values.entry(name.to_owned()).or_insert(0.0) += value;
    }
    Ok(values)
}

/// Every series of a Prometheus text page at `url`, labels included
/// (`name{label="value"}` -> value).
pub async fn scrape_series(url: &url::Url) -> anyhow::Result<BTreeMap<String, f64>> {
    let host = url.host_str().context("metrics URL without a host")?;
    let port = url.port_or_known_default().unwrap_or(80);
    let fetch = async {
        let mut socket = tokio::net::TcpStream::connect((host, port)).await?;
        let request = format!(
            "GET {} HTTP/1.0\r\nHost: {host}\r\nAccept: text/plain\r\n\r\n",
            url.path()
        );
        socket.write_all(request.as_bytes()).await?;
        let mut body = Vec::new();
        socket.read_to_end(&mut body).await?;
        std::io::Result::Ok(body)
    };
    let body = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .with_context(|| format!("{url}: no answer in 10s"))?
        .with_context(|| format!("cannot read {url}"))?;
    let text = String::from_utf8_lossy(&body);
    let Some((head, page)) = text.split_once("\r\n\r\n") else {
        bail!("{url}: not an HTTP answer");
    };
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("{url}: {}", head.lines().next().unwrap_or("no status line"));
    }
    let mut values = BTreeMap::new();
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        if let Ok(value) = value.trim().parse::<f64>() {
            *values.entry(series.trim().to_owned()).or_insert(0.0) += value;
        }
    }
    Ok(values)
}
