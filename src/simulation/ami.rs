//! A small Asterisk Manager Interface server for `pbxlink demo` and benchmarks: it greets
//! with the banner, answers `Challenge` and `Login` (any secret), answers every other action
//! with `Response: Success` (an empty event list for `CoreShowChannels`), and sends the
//! events it is given to every logged-in client. It is a stand-in for Asterisk's side of
//! the protocol only; the tests that matter run against a real Asterisk.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

use crate::pbx::asterisk::ami::{Frame, FrameLimits, Framer, Message};

/// A running simulator; dropping every handle does not stop it (it ends with the runtime).
#[derive(Debug, Clone)]
pub struct AmiSimulator {
    addr: SocketAddr,
    events: broadcast::Sender<Arc<String>>,
}

impl AmiSimulator {
    /// Listens on `addr` (port 0: any free port) in the current Tokio runtime.
    pub async fn start(addr: SocketAddr) -> std::io::Result<AmiSimulator> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (events, _) = broadcast::channel(65_536);
        let sender = events.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let events = sender.subscribe();
                tokio::spawn(async move {
                    if let Err(e) = serve(stream, events).await {
                        tracing::debug!("AMI simulator connection ended: {e}");
                    }
                });
            }
        });
        Ok(AmiSimulator { addr, events })
    }

    /// The address to put in `[asterisk.ami] host`/`port`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends one event (`Event: name` first) to every logged-in client.
    pub fn emit(&self, pairs: &[(&str, &str)]) {
        let _ = self
            .events
            .send(Arc::new(Message::from_pairs(pairs).to_wire()));
    }

    /// Clients logged in now.
    pub fn clients(&self) -> usize {
        self.events.receiver_count()
    }
}

async fn serve(
    mut stream: TcpStream,
    mut events: broadcast::Receiver<Arc<String>>,
) -> std::io::Result<()> {
    stream
        .write_all(b"Asterisk Call Manager/11.0.0\r\n")
        .await?;
    let mut framer = Framer::messages_only(FrameLimits::default());
    let mut chunk = vec![0u8; 16 * 1024];
    let mut logged_in = false;
    loop {
        tokio::select! {
            read = stream.read(&mut chunk) => {
                let n = read?;
                if n == 0 {
                    return Ok(());
                }
                framer.extend(&chunk[..n]);
                while let Some(frame) = framer
                    .next_frame()
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
                {
                    let Frame::Message(action) = frame else { continue };
                    let (reply, login) = answer(&action);
                    logged_in |= login;
                    stream.write_all(reply.as_bytes()).await?;
                    if action.get("Action").is_some_and(|a| a.eq_ignore_ascii_case("Logoff")) {
                        return Ok(());
                    }
                }
            }
            event = events.recv(), if logged_in => match event {
                Ok(wire) => stream.write_all(wire.as_bytes()).await?,
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
        }
    }
}

/// The reply to one action, and whether it logged the client in.
fn answer(action: &Message) -> (String, bool) {
    let id = action.action_id().unwrap_or_default();
    let name = action
        .get("Action")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let reply = |extra: &[(&str, &str)]| {
        let mut pairs = vec![("Response", "Success"), ("ActionID", id)];
        pairs.extend_from_slice(extra);
        Message::from_pairs(&pairs).to_wire()
    };
    match name.as_str() {
        "challenge" => (reply(&[("Challenge", "840563217")]), false),
        "login" => (reply(&[("Message", "Authentication accepted")]), true),
        "ping" => (reply(&[("Ping", "Pong")]), false),
        "coreshowchannels" => {
            let mut wire = reply(&[("EventList", "start"), ("Message", "Channels will follow")]);
            wire.push_str(
                &Message::from_pairs(&[
                    ("Event", "CoreShowChannelsComplete"),
                    ("ActionID", id),
                    ("EventList", "Complete"),
                    ("ListItems", "0"),
                ])
                .to_wire(),
            );
            (wire, false)
        }
        _ => (reply(&[]), false),
    }
}
