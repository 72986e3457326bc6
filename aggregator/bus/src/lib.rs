//! Everything that speaks D-Bus (zbus on tokio), in one module so that the rest stays pure.
//!
//! - [`variant`]: how values go on the wire and what received ones mean, for both encoders.
//! - [`export`]: a published service in the Venus `BusItem` style (ours and the simulator's).
//! - [`monitor`]: the cache of other services' values, fed by signals.
//! - [`client`]: calls to other services (`GetItems`, `SetValue`, settings).
//! - [`raw`] and [`wire`]: the monitor's second connection, read once per tick.
//! - [`socket`]: the socket under the zbus connections, watched for reading only.

pub mod client;
pub mod export;
pub mod monitor;
pub mod path_key;
pub mod private;
pub mod raw;
mod socket;
pub mod variant;
pub mod wire;

use zbus::connection::Builder;
use zbus::Connection;

/// How many messages a stream of ours (method calls to our service, owner changes) holds
/// before zbus pauses reading until it catches up (nothing is lost). The queue is allocated
/// whole, so small; a GUI or VRM logger asks for a few paths at a time.
pub const STREAM_QUEUE: usize = 32;

/// Text another service sent us (an error's name or message), as one line of our log:
/// newlines, control characters and quotes escaped, so a peer's multi-line traceback cannot
/// pass for lines of our own.
pub fn escaped(text: &str) -> String {
    text.escape_debug().to_string()
}

/// A failed call to `service`, for the log: the error's name and message it answered,
/// escaped, with the service named; our own failures (no answer, a closed connection) as
/// they are, escaped too since they may quote the bus.
pub fn peer_error(service: &str, err: &zbus::Error) -> String {
    match err {
        zbus::Error::MethodError(name, message, _) => format!(
            "{service} answered {} \"{}\"",
            escaped(name.as_str()),
            escaped(message.as_deref().unwrap_or(""))
        ),
        other => format!("{service}: {}", escaped(&other.to_string())),
    }
}

/// Which bus: the session bus when `DBUS_SESSION_BUS_ADDRESS` is set, else the system bus
/// (the rule of every Venus program, docs/venus.md §4) at `DBUS_SYSTEM_BUS_ADDRESS` or its
/// standard socket.
pub fn address() -> String {
    ["DBUS_SESSION_BUS_ADDRESS", "DBUS_SYSTEM_BUS_ADDRESS"]
        .iter()
        .filter_map(|var| std::env::var(var).ok())
        .find(|address| !address.is_empty())
        .unwrap_or_else(|| "unix:path=/var/run/dbus/system_bus_socket".to_string())
}

/// A connection and, on a Unix socket, a writer for the messages we encode ourselves on it.
#[derive(Clone, Debug)]
pub struct BusConnection {
    /// The zbus connection.
    pub conn: Connection,
    /// Writes to the connection's socket in turn with zbus (none off Unix sockets).
    pub writer: Option<socket::MessageWriter>,
}

/// A connection to the bus of [`address`], with its writer.
pub async fn connect() -> zbus::Result<BusConnection> {
    connect_with_writer(&address()).await
}

/// A connection to the bus at `address`: on a [`socket::QuietSocket`] with its writer for the
/// Unix addresses (every bus on Venus OS), else as zbus connects, without a writer.
pub async fn connect_with_writer(address: &str) -> zbus::Result<BusConnection> {
    match raw::connect_address(address).await {
        Ok(stream) => {
            let socket = socket::QuietSocket::new(stream)?;
            let writer = Some(socket.writer());
            let conn = Builder::socket(socket).build().await?;
            Ok(BusConnection { conn, writer })
        }
        Err(_) => Ok(BusConnection {
            conn: Builder::address(address)?.build().await?,
            writer: None,
        }),
    }
}

/// A connection to the bus at `address` (see [`connect_with_writer`]).
pub async fn connect_to(address: &str) -> zbus::Result<Connection> {
    Ok(connect_with_writer(address).await?.conn)
}

/// What the D-Bus layer fails with.
#[derive(Debug)]
pub enum Error {
    /// Another connection owns the name asked for.
    NameTaken,
    /// The bus refused or failed.
    Bus(zbus::Error),
    /// A message that is not D-Bus wire format.
    Wire(wire::WireError),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NameTaken => write!(f, "the name is already owned by another program"),
            Error::Bus(err) => write!(f, "{err}"),
            Error::Wire(err) => write!(f, "{err}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::NameTaken => None,
            // Shown whole by `Display`: their own causes, not themselves.
            Error::Bus(err) => err.source(),
            Error::Wire(err) => err.source(),
        }
    }
}

impl From<zbus::Error> for Error {
    fn from(err: zbus::Error) -> Self {
        Error::Bus(err)
    }
}

impl From<wire::WireError> for Error {
    fn from(err: wire::WireError) -> Self {
        Error::Wire(err)
    }
}

/// Requests a well-known name with `DO_NOT_QUEUE` (as velib does); the objects must be served
/// before this.
pub async fn request_name(conn: &Connection, name: &str) -> Result<(), Error> {
    const DO_NOT_QUEUE: u32 = 4;
    const PRIMARY_OWNER: u32 = 1;
    const ALREADY_OWNER: u32 = 4;
    let reply = conn
        .call_method(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            Some("org.freedesktop.DBus"),
            "RequestName",
            &(name, DO_NOT_QUEUE),
        )
        .await?;
    match reply.body().deserialize::<u32>()? {
        PRIMARY_OWNER | ALREADY_OWNER => Ok(()),
        _ => Err(Error::NameTaken),
    }
}

/// Gives a well-known name back.
pub async fn release_name(conn: &Connection, name: &str) -> zbus::Result<()> {
    conn.call_method(
        Some("org.freedesktop.DBus"),
        "/org/freedesktop/DBus",
        Some("org.freedesktop.DBus"),
        "ReleaseName",
        &(name,),
    )
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_error_is_one_escaped_line_naming_the_service() {
        let call = zbus::Message::method_call("/Settings", "SetValue")
            .and_then(|b| b.build(&()))
            .expect("a message");
        let err = zbus::Error::MethodError(
            "com.example.Error\nFake".try_into().unwrap_or_else(|_| {
                zbus::names::OwnedErrorName::try_from("com.example.Error").expect("a name")
            }),
            Some("Traceback (most recent call last):\n  File \"x.py\"\nERROR: root".into()),
            call,
        );
        let line = peer_error("com.victronenergy.settings", &err);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.starts_with("com.victronenergy.settings answered com.example.Error"));
        assert!(
            line.contains("Traceback (most recent call last):\\n  File \\\"x.py"),
            "{line}"
        );
        let failure = zbus::Error::Failure("no answer\r\nINFO fake".into());
        assert_eq!(peer_error("s", &failure), "s: no answer\\r\\nINFO fake");
    }
}
