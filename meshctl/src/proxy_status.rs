//! `meshctl proxy-status`: every client connected to meshd and, per xDS
//! type, whether it runs the latest config (SYNCED), has a newer version
//! pending or held back (STALE), or rejected it (NACKED), read from meshd's
//! `/debug/syncz`.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use crate::common::{print_json, CliError};

/// Arguments of `meshctl proxy-status`.
#[derive(clap::Args)]
pub struct Args {
    /// meshd's HTTP address (its /debug endpoints).
    #[arg(long, default_value = "http://127.0.0.1:15014")]
    meshd: String,
    /// Output: a table, or meshd's JSON as is.
    #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
    output: String,
}

/// `host:port` from `http://host:port[/]` or `host:port`.
fn authority(url: &str) -> Result<String, CliError> {
    if url.starts_with("https://") {
        return Err(format!(
            "{url}: meshd's debug port is plain HTTP; use http://HOST:PORT"
        ));
    }
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let auth = rest.split('/').next().unwrap_or_default();
    if auth.is_empty() {
        return Err(format!(
            "{url}: expected http://HOST:PORT (e.g. http://127.0.0.1:15014)"
        ));
    }
    Ok(auth.to_string())
}

/// GETs `path` from meshd's HTTP port and returns the body of a 200.
pub fn get(meshd: &str, path: &str) -> Result<String, CliError> {
    let auth = authority(meshd)?;
    let fail = |e: std::io::Error| {
        format!(
            "cannot reach meshd at {auth}: {e}; is meshd running and is --meshd its HTTP address?"
        )
    };
    let addr = auth
        .to_socket_addrs()
        .map_err(fail)?
        .next()
        .ok_or_else(|| format!("{auth} resolves to no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(fail)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(fail)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {auth}\r\nConnection: close\r\n\r\n"
    )
    .map_err(fail)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(fail)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{auth}{path}: not an HTTP response"))?;
    let status = head.split(' ').nth(1).unwrap_or_default();
    if status != "200" {
        return Err(format!("{auth}{path}: HTTP {status}: {}", body.trim()));
    }
    Ok(body.to_string())
}

fn cell(t: &Value) -> String {
    let state = t["state"].as_str().unwrap_or("?");
    let current = t["current"].as_str().unwrap_or("-");
    match state {
        "SYNCED" => format!("SYNCED ({current})"),
        "STALE" => format!(
            "STALE (acked {}, latest {current})",
            t["acked"].as_str().unwrap_or("none")
        ),
        "NACKED" => format!(
            "NACKED ({}: {})",
            t["sent"].as_str().unwrap_or("-"),
            t["nack"].as_str().unwrap_or("")
        ),
        other => other.to_string(),
    }
}

/// Renders syncz rows as a table.
pub fn table(rows: &[Value]) -> String {
    const TYPES: [&str; 4] = ["CDS", "LDS", "EDS", "RDS"];
    let mut grid: Vec<Vec<String>> = vec![["NODE", "NAMESPACE", "STREAMS"]
        .iter()
        .chain(TYPES.iter())
        .map(|s| s.to_string())
        .collect()];
    for r in rows {
        let mut line = vec![
            r["node"].as_str().unwrap_or("?").to_string(),
            r["namespace"].as_str().unwrap_or("?").to_string(),
            r["streams"].to_string(),
        ];
        line.extend(TYPES.iter().map(|t| cell(&r["types"][*t])));
        grid.push(line);
    }
    let widths: Vec<usize> = (0..grid[0].len())
        .map(|i| grid.iter().map(|l| l[i].chars().count()).max().unwrap_or(0))
        .collect();
    grid.iter()
        .map(|l| {
            l.iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs the command.
pub fn run(args: Args) -> Result<ExitCode, CliError> {
    let body = get(&args.meshd, "/debug/syncz")?;
    let rows: Value = serde_json::from_str(&body)
        .map_err(|e| format!("meshd's /debug/syncz is not the expected JSON: {e}"))?;
    if args.output == "json" {
        print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows = rows.as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        println!("no clients connected to meshd at {}", args.meshd);
    } else {
        println!("{}", table(&rows));
    }
    Ok(ExitCode::SUCCESS)
}
