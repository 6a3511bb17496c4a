//! Istio's TCP metrics for opaque connections: connections opened and
//! closed, bytes sent and received, under the standard labels (those of
//! requests less `response_code` and `grpc_response_status`), from the
//! side that reports them: [`Telemetry::tcp_inbound`] for a connection a
//! workload accepted (`reporter="destination"`), [`Telemetry::tcp_outbound`]
//! for one it opened (`reporter="source"`). Wrap the connection's stream in
//! [`MeteredIo`] and the bytes and the close are counted as it is used and
//! dropped.
//!
//! Bytes are named from the reporter's view, as Envoy names them: received
//! are the bytes that came from the downstream (the client of the
//! connection), sent are those that went back to it.
//!
//! Not here: HTTP requests (the telemetry layer), and learning the peer's
//! workload over TCP (Istio's ALPN metadata exchange); the peer is known
//! by its verified principal only.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use mesh_core::config::telemetry::IstioMetric;
use mesh_core::sync::LockExt;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, LabelSetEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::peer::{Peer, UNKNOWN};
use super::plan::direction;
use super::{Reporter, Telemetry};
use crate::server::ConnectionInfo;

/// The labels of TCP series, in the order Istio's proxies write them.
pub const TCP_LABELS: [&str; 23] = [
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "response_flags",
    "connection_security_policy",
];

/// One TCP series.
#[derive(Default)]
pub struct TcpSeries {
    /// `istio_tcp_connections_opened_total`.
    pub opened: AtomicU64,
    /// `istio_tcp_connections_closed_total`.
    pub closed: AtomicU64,
    /// `istio_tcp_sent_bytes_total`.
    pub sent: AtomicU64,
    /// `istio_tcp_received_bytes_total`.
    pub received: AtomicU64,
}

/// A TCP series' label values, in [`TCP_LABELS`] order.
type Values = Box<[Arc<str>]>;

/// Every TCP series of a process, by label values.
#[derive(Default)]
pub struct TcpMetrics {
    series: Mutex<HashMap<Values, Arc<TcpSeries>>>,
}

impl fmt::Debug for TcpMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpMetrics")
            .field("series", &self.series.locked().len())
            .finish()
    }
}

impl TcpMetrics {
    /// The series for `values` (in [`TCP_LABELS`] order).
    pub fn series(&self, values: Vec<Arc<str>>) -> Arc<TcpSeries> {
        self.series
            .locked()
            .entry(values.into_boxed_slice())
            .or_default()
            .clone()
    }
}

struct Labels<'a>(&'a [Arc<str>]);

impl EncodeLabelSet for Labels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        for (n, v) in TCP_LABELS.iter().zip(self.0.iter()) {
            prometheus_client::encoding::EncodeLabel::encode(&(*n, &**v), encoder.encode_label())?;
        }
        Ok(())
    }
}

impl Collector for TcpMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let mut all: Vec<(Values, Arc<TcpSeries>)> = self
            .series
            .locked()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        type Read = fn(&TcpSeries) -> u64;
        let families: [(&str, &str, Read); 4] = [
            (
                "istio_tcp_connections_opened",
                "TCP connections opened.",
                |s| s.opened.load(Relaxed),
            ),
            (
                "istio_tcp_connections_closed",
                "TCP connections closed.",
                |s| s.closed.load(Relaxed),
            ),
            (
                "istio_tcp_sent_bytes",
                "Bytes sent back to the downstream.",
                |s| s.sent.load(Relaxed),
            ),
            (
                "istio_tcp_received_bytes",
                "Bytes received from the downstream.",
                |s| s.received.load(Relaxed),
            ),
        ];
        for (name, help, read) in families {
            if all.is_empty() {
                break;
            }
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (labels, s) in &all {
                let labels = Labels(labels);
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&read(s), None)?;
            }
        }
        Ok(())
    }
}

/// Which TCP metrics a connection records, from the policy.
#[derive(Debug, Clone, Copy, Default)]
struct Records {
    opened: bool,
    closed: bool,
    sent: bool,
    received: bool,
}

/// One metered connection: counted open when made, closed when dropped.
pub struct TcpConnection {
    series: Option<Arc<TcpSeries>>,
    records: Records,
}

impl fmt::Debug for TcpConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpConnection")
            .field("metered", &self.series.is_some())
            .finish()
    }
}

impl TcpConnection {
    /// Adds bytes that came from the downstream.
    pub fn received(&self, n: u64) {
        if let Some(s) = self.series.as_ref().filter(|_| self.records.received) {
            s.received.fetch_add(n, Relaxed);
        }
    }

    /// Adds bytes that went back to the downstream.
    pub fn sent(&self, n: u64) {
        if let Some(s) = self.series.as_ref().filter(|_| self.records.sent) {
            s.sent.fetch_add(n, Relaxed);
        }
    }
}

impl Drop for TcpConnection {
    fn drop(&mut self) {
        if let Some(s) = self.series.as_ref().filter(|_| self.records.closed) {
            s.closed.fetch_add(1, Relaxed);
        }
    }
}

impl Telemetry {
    /// Meters a connection this workload accepted on `conn` for
    /// `service` (the host it serves there; `unknown` when `None`).
    pub fn tcp_inbound(&self, conn: &ConnectionInfo, service: Option<&str>) -> TcpConnection {
        let principal = conn.identity.as_ref().map(|i| i.uri_arc());
        let security = if principal.is_some() {
            "mutual_tls"
        } else {
            "none"
        };
        self.tcp(
            Reporter::Destination,
            service.unwrap_or(UNKNOWN),
            principal,
            security,
        )
    }

    /// Meters a connection this workload opened to `host` (a service host,
    /// fully qualified where it is a mesh service).
    pub fn tcp_outbound(&self, host: &str) -> TcpConnection {
        self.tcp(Reporter::Source, host, None, UNKNOWN)
    }

    fn tcp(
        &self,
        reporter: Reporter,
        service: &str,
        remote_principal: Option<Arc<str>>,
        security: &str,
    ) -> TcpConnection {
        let policy = self.inner.model.borrow().telemetry.clone();
        let d = policy.direction(direction(reporter));
        let records = Records {
            opened: d.metrics.records(IstioMetric::TcpOpenedConnections),
            closed: d.metrics.records(IstioMetric::TcpClosedConnections),
            sent: d.metrics.records(IstioMetric::TcpSentBytes),
            received: d.metrics.records(IstioMetric::TcpReceivedBytes),
        };
        if !(records.opened || records.closed || records.sent || records.received) {
            return TcpConnection {
                series: None,
                records,
            };
        }
        let t = &self.inner;
        let remote = Peer::unknown();
        let remote_principal = remote_principal.unwrap_or_else(|| t.unknown.clone());
        let (src, src_principal, dst, dst_principal) = match reporter {
            Reporter::Source => (&t.local, t.principal.clone(), &remote, remote_principal),
            Reporter::Destination => (&remote, remote_principal, &t.local, t.principal.clone()),
        };
        let (service_name, service_namespace) = t.service_parts(service);
        let reporter = match reporter {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        };
        let values: Vec<Arc<str>> = vec![
            reporter.into(),
            src.workload.clone(),
            src.canonical_service.clone(),
            src.canonical_revision.clone(),
            src.namespace.clone(),
            src_principal,
            src.app.clone(),
            src.version.clone(),
            src.cluster.clone(),
            dst.workload.clone(),
            dst.namespace.clone(),
            dst_principal,
            dst.app.clone(),
            dst.version.clone(),
            service.into(),
            dst.canonical_service.clone(),
            dst.canonical_revision.clone(),
            service_name,
            service_namespace,
            dst.cluster.clone(),
            "tcp".into(),
            "-".into(),
            security.into(),
        ];
        let series = t.metrics.tcp().series(values);
        if records.opened {
            series.opened.fetch_add(1, Relaxed);
        }
        TcpConnection {
            series: Some(series),
            records,
        }
    }
}

pin_project_lite::pin_project! {
    /// A stream that counts what passes through it into a
    /// [`TcpConnection`], and closes it when dropped.
    pub struct MeteredIo<S> {
        #[pin]
        inner: S,
        meter: TcpConnection,
        // On the server, reads come from the downstream; on the client,
        // writes do (the app is the downstream).
        reads_are_received: bool,
    }
}

impl<S> MeteredIo<S> {
    /// Meters an accepted stream (`Telemetry::tcp_inbound`).
    pub fn inbound(inner: S, meter: TcpConnection) -> Self {
        MeteredIo {
            inner,
            meter,
            reads_are_received: true,
        }
    }

    /// Meters a stream this workload opened (`Telemetry::tcp_outbound`):
    /// what it writes is what its app sent (received from the downstream).
    pub fn outbound(inner: S, meter: TcpConnection) -> Self {
        MeteredIo {
            inner,
            meter,
            reads_are_received: false,
        }
    }

    fn count(meter: &TcpConnection, reads_are_received: bool, read: bool, n: usize) {
        if read == reads_are_received {
            meter.received(n as u64);
        } else {
            meter.sent(n as u64);
        }
    }
}

impl<S: AsyncRead> AsyncRead for MeteredIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            Self::count(
                this.meter,
                *this.reads_are_received,
                true,
                buf.filled().len() - before,
            );
        }
        r
    }
}

impl<S: AsyncWrite> AsyncWrite for MeteredIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &r {
            Self::count(this.meter, *this.reads_are_received, false, *n);
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
