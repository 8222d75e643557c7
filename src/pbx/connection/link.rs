//! [`Link`]: the TCP side of one PBX connection.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;

/// Bytes read per `read` call.
const READ_CHUNK: usize = 16 * 1024;

/// What can end a connection at the socket level, whatever the protocol.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// A socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done (e.g. "connect to 127.0.0.1:5038").
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The server closed the connection.
    #[error("the server closed the connection")]
    ClosedByServer,
    /// A step (connect, login, a setup request, a write) timed out.
    #[error("{step} timed out after {after:?}")]
    StepTimeout {
        /// The step.
        step: &'static str,
        /// Its timeout.
        after: Duration,
    },
    /// No byte arrived for this long although keepalives were sent.
    #[error("no data for {idle:?} despite keepalives: connection half-open, dropped")]
    HalfOpen {
        /// How long the connection was silent.
        idle: Duration,
    },
}

/// Runs one step of connecting with a deadline; expiry is [`LinkError::StepTimeout`].
pub async fn within_step<T, E: From<LinkError>>(
    step: &'static str,
    timeout: Duration,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(LinkError::StepTimeout {
            step,
            after: timeout,
        }
        .into()),
    }
}

/// A protocol's framer as [`Link::read_frame`] feeds and drains it.
pub trait Framing {
    /// One whole message of the protocol.
    type Frame;
    /// Why the bytes are no frame (malformed, oversized).
    type Error;
    /// Appends bytes read from the connection.
    fn extend(&mut self, bytes: &[u8]);
    /// The next whole frame buffered, if any.
    fn next_frame(&mut self) -> Result<Option<Self::Frame>, Self::Error>;
}

/// Implements [`Framing`] for a protocol's framer type `$framer` whose inherent
/// `extend(&mut self, &[u8])` and `next_frame(&mut self) -> Result<Option<$frame>, $error>`
/// are what the trait asks.
macro_rules! impl_framing {
    ($framer:ty, $frame:ty, $error:ty) => {
        impl $crate::pbx::connection::Framing for $framer {
            type Frame = $frame;
            type Error = $error;

            fn extend(&mut self, bytes: &[u8]) {
                <$framer>::extend(self, bytes);
            }

            fn next_frame(&mut self) -> Result<Option<$frame>, $error> {
                <$framer>::next_frame(self)
            }
        }
    };
}
pub(crate) use impl_framing;

/// One TCP connection: split socket, a read chunk, the time the last byte arrived.
#[derive(Debug)]
pub struct Link {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    chunk: Box<[u8]>,
    last_rx: Instant,
    write_timeout: Duration,
    setup_timeout: Duration,
}

impl Link {
    /// Connects to `host:port` within `setup_timeout` (no Nagle: requests are small).
    pub async fn connect(
        host: &str,
        port: u16,
        setup_timeout: Duration,
        write_timeout: Duration,
    ) -> Result<Link, LinkError> {
        let stream = within_step("connect", setup_timeout, async {
            TcpStream::connect((host, port))
                .await
                .map_err(|e| LinkError::Io {
                    context: format!("connect to {host}:{port}"),
                    source: e,
                })
        })
        .await?;
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        Ok(Link {
            rd,
            wr,
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
            last_rx: Instant::now(),
            write_timeout,
            setup_timeout,
        })
    }

    /// The bytes of the next read (cancel safe). End of stream is
    /// [`LinkError::ClosedByServer`].
    pub async fn read(&mut self) -> Result<&[u8], LinkError> {
        let n = self
            .rd
            .read(&mut self.chunk)
            .await
            .map_err(|e| LinkError::Io {
                context: "read".into(),
                source: e,
            })?;
        if n == 0 {
            return Err(LinkError::ClosedByServer);
        }
        self.last_rx = Instant::now();
        Ok(&self.chunk[..n])
    }

    /// Writes all of `bytes` within the write timeout.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        match tokio::time::timeout(self.write_timeout, self.wr.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(LinkError::Io {
                context: "write".into(),
                source: e,
            }),
            Err(_) => Err(LinkError::StepTimeout {
                step: "write",
                after: self.write_timeout,
            }),
        }
    }

    /// Writes `bytes` if it can within one second (a goodbye before closing).
    pub async fn write_best_effort(&mut self, bytes: &[u8]) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.wr.write_all(bytes)).await;
    }

    /// Counts now as the last time a byte arrived: the silence since was caused on this
    /// side (the reader chose not to read while its consumer was full).
    pub fn note_alive(&mut self) {
        self.last_rx = Instant::now();
    }

    /// When the last byte arrived (or the connection was made).
    pub fn last_rx(&self) -> Instant {
        self.last_rx
    }

    /// The timeout of each setup step.
    pub fn setup_timeout(&self) -> Duration {
        self.setup_timeout
    }

    /// The next frame `framer` makes of what arrives (reading as needed), within the setup
    /// timeout: for the setup phase (login, subscription), before the supervisor serves the
    /// connection.
    pub async fn read_frame<F, E>(
        &mut self,
        framer: &mut F,
        step: &'static str,
    ) -> Result<F::Frame, E>
    where
        F: Framing,
        E: From<F::Error> + From<LinkError>,
    {
        let timeout = self.setup_timeout;
        within_step(step, timeout, async {
            loop {
                if let Some(f) = framer.next_frame()? {
                    return Ok(f);
                }
                let bytes = self.read().await?;
                framer.extend(bytes);
            }
        })
        .await
    }
}
