//! One AMI session as the PBX-neutral [`Supervisor`](crate::pbx::connection::Supervisor)
//! drives it: banner, login (MD5 challenge or plain), event filtering, `Ping` as the
//! keepalive, `Logoff` as the goodbye. Reconnecting, backoff, half-open detection and the
//! connection state are the supervisor's.

use std::sync::Arc;

use tracing::{debug, info};

use super::client::PARK_LIMIT;
use super::dispatch::{Dispatcher, Fanout};
use super::{Action, AmiError, Frame, FrameError, FrameLimits, Framer, Message};
use crate::config::{AmiLogin, AmiSettings};
use crate::pbx::connection::{Backlog, Failure, Link, LinkError, Protocol};

impl From<LinkError> for AmiError {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Io { context, source } => AmiError::Io { context, source },
            LinkError::ClosedByServer => AmiError::ClosedByServer,
            LinkError::StepTimeout { step, after } => AmiError::StepTimeout { step, after },
            LinkError::HalfOpen { idle } => AmiError::HalfOpen { idle },
        }
    }
}

crate::pbx::connection::impl_framing!(Framer, Frame, FrameError);

/// The AMI protocol: what the supervisor needs to log in and serve a connection.
pub(super) struct AmiProtocol {
    pub(super) dispatcher: Arc<Dispatcher>,
    pub(super) settings: AmiSettings,
    pub(super) secret: String,
}

/// A logged-in connection's framer, its side of the event fan-out and the counter of its
/// internal ActionIDs.
pub(super) struct AmiSession {
    framer: Framer,
    fanout: Fanout,
    next_internal: u64,
}

impl AmiSession {
    fn internal_id(&mut self, what: &str) -> String {
        self.next_internal += 1;
        format!("pbxlink-{what}-{}", self.next_internal)
    }

    /// The next frame within the setup timeout (setup phase only).
    async fn read_frame(&mut self, link: &mut Link, step: &'static str) -> Result<Frame, AmiError> {
        link.read_frame(&mut self.framer, step).await
    }

    /// A setup action and its response; events arriving meanwhile are dispatched.
    async fn request(
        &mut self,
        link: &mut Link,
        dispatcher: &Dispatcher,
        action: &Action,
        step: &'static str,
    ) -> Result<Message, AmiError> {
        let id = self.internal_id(step);
        link.write(&action.encode(&id)?).await?;
        loop {
            match self.read_frame(link, step).await? {
                Frame::Message(m) if m.action_id() == Some(id.as_str()) && m.event().is_none() => {
                    return Ok(m);
                }
                Frame::Message(m) => {
                    dispatcher.dispatch(&mut self.fanout, m);
                    if dispatcher.backlog(&self.fanout) == Backlog::StopReading
                        || self.fanout.held_len() >= PARK_LIMIT
                    {
                        dispatcher.flush(&mut self.fanout).await;
                    }
                }
                Frame::Banner { .. } => {}
            }
        }
    }
}

impl Protocol for AmiProtocol {
    type Pending = super::dispatch::Calls;
    type Session = AmiSession;
    type Ticket = ();
    type Error = AmiError;

    const NAME: &'static str = "AMI";

    fn connect<'a>(
        &'a mut self,
        link: &'a mut Link,
    ) -> impl Future<Output = Result<(AmiSession, String), AmiError>> + Send + 'a {
        establish(self, link)
    }

    fn received(&mut self, session: &mut AmiSession, bytes: &[u8]) -> Result<(), AmiError> {
        session.framer.extend(bytes);
        self.dispatcher
            .pump(&mut session.fanout, &mut session.framer)
            .map_err(Into::into)
    }

    fn backlog(&self, session: &AmiSession) -> Backlog {
        self.dispatcher.backlog(&session.fanout)
    }

    async fn drain(&mut self, session: &mut AmiSession) -> Result<(), AmiError> {
        let d = &*self.dispatcher;
        loop {
            d.flush(&mut session.fanout).await;
            d.pump(&mut session.fanout, &mut session.framer)?;
            if d.backlog(&session.fanout) == Backlog::None {
                return Ok(());
            }
        }
    }

    fn written(&mut self, _session: &mut AmiSession, _ticket: ()) {}

    fn keepalive(&mut self, session: &mut AmiSession) -> Result<Option<Vec<u8>>, AmiError> {
        let id = session.internal_id("ping");
        Action::new("Ping").encode(&id).map(Some)
    }

    fn goodbye(&mut self, session: &mut AmiSession) -> Option<Vec<u8>> {
        let id = session.internal_id("logoff");
        Action::new("Logoff").encode(&id).ok()
    }

    fn classify(error: &AmiError) -> Failure {
        match error {
            AmiError::LoginFailed { .. } => Failure::LoginRefused,
            AmiError::Frame(_) => Failure::MalformedFrame,
            AmiError::HalfOpen { .. } => Failure::HalfOpen,
            _ => Failure::Other,
        }
    }
}

/// Banner, login, event filtering.
async fn establish(
    protocol: &AmiProtocol,
    link: &mut Link,
) -> Result<(AmiSession, String), AmiError> {
    let dispatcher = &*protocol.dispatcher;
    let settings = &protocol.settings;
    let server = dispatcher.sup.server();
    let mut session = AmiSession {
        framer: Framer::after_connect(FrameLimits::default()),
        fanout: Fanout::default(),
        next_internal: 0,
    };
    let version = match session.read_frame(link, "banner").await? {
        Frame::Banner { version } => version,
        Frame::Message(_) => return Err(FrameError::BadBanner(String::new()).into()),
    };
    debug!(server, %version, "AMI banner");
    let login = Action::new("Login").header("Username", settings.username.as_str())?;
    let login = match settings.login {
        AmiLogin::Plain => login.header("Secret", protocol.secret.as_str())?,
        AmiLogin::Md5 => {
            let challenge = Action::new("Challenge").header("AuthType", "MD5")?;
            let reply = session
                .request(link, dispatcher, &challenge, "challenge")
                .await?;
            let Some(challenge) = reply.get("Challenge").filter(|_| !reply.is_error()) else {
                return Err(AmiError::LoginFailed {
                    username: settings.username.clone(),
                    message: format!(
                        "MD5 challenge refused ({}); set [asterisk.ami] login = \"plain\"",
                        reply.get("Message").unwrap_or("no Challenge in the reply")
                    ),
                });
            };
            login
                .header("AuthType", "MD5")?
                .header("Key", md5_key(challenge, &protocol.secret))?
        }
    };
    let login = login.header("Events", "off")?;
    let reply = session.request(link, dispatcher, &login, "login").await?;
    if reply.is_error() || reply.response().is_none() {
        return Err(AmiError::LoginFailed {
            username: settings.username.clone(),
            message: reply.get("Message").unwrap_or("").to_owned(),
        });
    }
    setup_events(&mut session, link, dispatcher).await?;
    Ok((session, version))
}

/// The `Key` of an MD5 login: the lowercase hex MD5 of the challenge followed by the secret.
pub fn md5_key(challenge: &str, secret: &str) -> String {
    use md5::{Digest, Md5};
    let digest = Md5::new()
        .chain_update(challenge.as_bytes())
        .chain_update(secret.as_bytes())
        .finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Server-side `Filter`s when allowed, else an `EventMask` of classes; then events on.
async fn setup_events(
    session: &mut AmiSession,
    link: &mut Link,
    dispatcher: &Dispatcher,
) -> Result<(), AmiError> {
    let server = dispatcher.sup.server();
    let filter = &dispatcher.filter;
    let mut server_side = false;
    let mask = if filter.all() {
        "on".to_owned()
    } else {
        server_side = true;
        for name in filter.wanted() {
            // Legacy filters are regexes over the whole event text: anchor the name.
            let action = Action::new("Filter")
                .header("Operation", "Add")?
                .header("Filter", format!("Event: {name}[[:space:]]"))?;
            let reply = session.request(link, dispatcher, &action, "filter").await?;
            if reply.is_error() {
                info!(
                    server,
                    "Asterisk refused Action: Filter ({}); filtering events in pbxlink \
                     (give the manager user `write = system` to filter in Asterisk)",
                    reply.get("Message").unwrap_or("")
                );
                server_side = false;
                break;
            }
        }
        if server_side {
            "on".to_owned()
        } else {
            filter.class_mask()
        }
    };
    dispatcher.set_server_side_filter(server_side);
    let events = Action::new("Events").header("EventMask", mask.as_str())?;
    let reply = session.request(link, dispatcher, &events, "events").await?;
    if reply.is_error() {
        return Err(AmiError::Rejected {
            action: "Events".into(),
            message: reply.get("Message").unwrap_or("").to_owned(),
        });
    }
    debug!(server, %mask, server_side, "AMI events on");
    Ok(())
}
