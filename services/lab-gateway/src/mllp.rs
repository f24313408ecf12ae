//! HL7 v2 over MLLP: TCP, each message framed `0x0B … 0x1C 0x0D`, each answered on the same
//! connection with its ACK, framed the same way, only after the report is on the bus.
//!
//! MLLP has no authentication of its own. Hospital interface engines reach a lab interface
//! over a private network, and the receiver knows each sender by its address: so does hixbus.
//! A connection from an address not configured for an organization that may report results
//! is closed at once, and audited.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hixbus_access::Action;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::charset::Charset;
use crate::hl7::{Header, Problem, Refusal};
use crate::routes::{AppState, MAX_MESSAGE_BYTES, receive, refused};

const START: u8 = 0x0B;
const END: [u8; 2] = [0x1C, 0x0D];

/// How long a connection may stay silent between messages.
pub const IDLE: Duration = Duration::from_secs(300);
/// How long one message may take to arrive once begun, by default (`mllp_frame_timeout_secs`):
/// a frame that never ends, or trickles in a byte at a time, is not waited for.
pub const FRAME: Duration = Duration::from_secs(30);
/// Connections open at once, from all senders.
pub const MAX_CONNECTIONS: usize = 256;

/// Which organization sends from which address.
pub type Senders = Arc<HashMap<IpAddr, String>>;

/// Accepts connections until `stopping` is cancelled, then waits for those open to finish the
/// message in hand.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    senders: Senders,
    frame: Duration,
    stopping: CancellationToken,
) {
    let connections = TaskTracker::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            () = stopping.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "MLLP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "MLLP connection refused: too many open");
            continue;
        };
        let (state, senders, stopping) = (state.clone(), senders.clone(), stopping.clone());
        connections.spawn(async move {
            connection(stream, peer, &state, &senders, frame, &stopping).await;
            drop(permit);
        });
    }
    connections.close();
    connections.wait().await;
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    state: &AppState,
    senders: &Senders,
    frame: Duration,
    stopping: &CancellationToken,
) {
    let org = senders
        .get(&peer.ip())
        .and_then(|id| state.directory.get(id))
        .filter(|org| org.role.may(Action::ReportLabResults))
        .cloned();
    let Some(org) = org else {
        tracing::warn!(%peer, "MLLP connection from an address no sender is configured for");
        if let Err(e) = state
            .audit
            .record("anonymous", "denied.mllp", &format!("MLLP from {peer}"), "")
            .await
        {
            tracing::error!(error = %e, "audit of a refused MLLP connection failed");
        }
        return;
    };
    let _ = stream.set_nodelay(true);
    let mut buffer: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    // When the frame in hand must have ended: from its start, however slowly its bytes come.
    let mut frame_deadline: Option<tokio::time::Instant> = None;
    loop {
        // Answer every complete frame already received.
        while let Some((frame, rest)) = next_frame(&buffer) {
            let answer = receive(state, &org, &frame).await;
            buffer = rest;
            // The next frame's time starts when it does.
            frame_deadline = None;
            if write_frame(&mut stream, &answer.ack).await.is_err() {
                return;
            }
        }
        let in_frame = buffer.contains(&START);
        if !in_frame {
            frame_deadline = None;
        } else if frame_deadline.is_none() {
            frame_deadline = Some(tokio::time::Instant::now() + frame);
        }
        if buffer.len() > MAX_MESSAGE_BYTES + 2 {
            let problem = Problem {
                refusal: Refusal::Reject,
                code: 100,
                segment: "MSH".to_owned(),
                sequence: 1,
                field: 0,
                reason: format!("a message may have at most {MAX_MESSAGE_BYTES} bytes"),
            };
            let answer = refused(&Header::default(), Charset::Ascii, &problem);
            let _ = write_frame(&mut stream, &answer.ack).await;
            tracing::info!(org = %org.id, %peer, "MLLP frame too large; connection closed");
            return;
        }
        let deadline = frame_deadline.unwrap_or_else(|| tokio::time::Instant::now() + IDLE);
        let read = tokio::select! {
            () = stopping.cancelled(), if !in_frame => return,
            read = tokio::time::timeout_at(deadline, stream.read(&mut chunk)) => read,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => return, // closed: a partial frame is dropped, unanswered
            Ok(Ok(n)) => buffer.extend_from_slice(&chunk[..n]),
            Err(_) => {
                tracing::info!(org = %org.id, %peer, in_frame, "MLLP connection timed out");
                return;
            }
        }
    }
}

/// The first complete frame in `buffer` (without its framing) and what follows it. Bytes
/// before a start block are not a message and are dropped.
fn next_frame(buffer: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let start = buffer.iter().position(|b| *b == START)?;
    let body = &buffer[start + 1..];
    let end = body.windows(2).position(|w| w == END)?;
    Some((body[..end].to_vec(), body[end + 2..].to_vec()))
}

async fn write_frame(stream: &mut TcpStream, ack: &[u8]) -> std::io::Result<()> {
    let mut framed = Vec::with_capacity(ack.len() + 3);
    framed.push(START);
    framed.extend_from_slice(ack);
    framed.extend_from_slice(&END);
    stream.write_all(&framed).await
}

/// `ORGANIZATION=ADDRESS` entries (the `mllp_senders` setting) as a lookup.
pub fn senders(entries: &[String]) -> Result<Senders, String> {
    let mut senders = HashMap::new();
    for entry in entries {
        let (org, address) = entry
            .split_once('=')
            .ok_or_else(|| format!("mllp_senders: expected ORGANIZATION=ADDRESS, got {entry:?}"))?;
        let address: IpAddr = address
            .trim()
            .parse()
            .map_err(|e| format!("mllp_senders: {address:?}: {e}"))?;
        if let Some(other) = senders.insert(address, org.trim().to_owned()) {
            return Err(format!(
                "mllp_senders: {address} is given to both {other} and {}",
                org.trim()
            ));
        }
    }
    Ok(Arc::new(senders))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_at_their_end_and_noise_before_a_start_is_dropped() {
        let mut buffer = b"noise\x0BMSH|1\r\x1C\x0D\x0BMSH|2".to_vec();
        let (frame, rest) = next_frame(&buffer).unwrap();
        assert_eq!(frame, b"MSH|1\r");
        assert_eq!(rest, b"\x0BMSH|2");
        assert!(next_frame(&rest).is_none(), "an unfinished frame waits");
        buffer.clear();
        assert!(next_frame(&buffer).is_none());
    }

    #[test]
    fn senders_are_organization_address_pairs_each_address_once() {
        let s = senders(&[
            "lab-kensa=127.0.0.1".to_owned(),
            "hospital-daiichi = ::1".to_owned(),
        ])
        .unwrap();
        assert_eq!(s.get(&"127.0.0.1".parse().unwrap()).unwrap(), "lab-kensa");
        assert!(senders(&["lab-kensa".to_owned()]).is_err());
        assert!(
            senders(&["a=127.0.0.1".to_owned(), "b=127.0.0.1".to_owned()]).is_err(),
            "one address, two senders"
        );
    }
}
