//! Everything that speaks D-Bus (zbus on tokio), in one module so that the rest stays pure.
//!
//! - [`variant`]: values on the wire, both ways.
//! - [`export`]: a published service in the Venus `BusItem` style (ours and the simulator's).
//! - [`monitor`]: the cache of other services' values, fed by signals.
//! - [`client`]: calls to other services (`GetItems`, `SetValue`, settings).

pub mod client;
pub mod export;
pub mod monitor;
pub mod private;
pub mod variant;

use zbus::connection::Builder;
use zbus::Connection;

/// Which bus: the session bus when `DBUS_SESSION_BUS_ADDRESS` is set, else the system bus
/// (the rule of every Venus program, VENUS-DBUS.md §2).
pub async fn connect() -> zbus::Result<Connection> {
    match std::env::var("DBUS_SESSION_BUS_ADDRESS") {
        Ok(address) if !address.is_empty() => connect_to(&address).await,
        _ => Builder::system()?.build().await,
    }
}

/// A connection to the bus at `address`.
pub async fn connect_to(address: &str) -> zbus::Result<Connection> {
    Builder::address(address)?.build().await
}

/// Why a name could not be had.
#[derive(Debug)]
pub enum NameError {
    /// Another connection owns it.
    Taken,
    /// The bus refused or failed.
    Bus(zbus::Error),
}

impl std::fmt::Display for NameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameError::Taken => write!(f, "the name is already owned by another program"),
            NameError::Bus(err) => write!(f, "{err}"),
        }
    }
}

/// Requests a well-known name with `DO_NOT_QUEUE` (as velib does); the objects must be served
/// before this.
pub async fn request_name(conn: &Connection, name: &str) -> Result<(), NameError> {
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
        .await
        .map_err(NameError::Bus)?;
    match reply.body().deserialize::<u32>().map_err(NameError::Bus)? {
        PRIMARY_OWNER | ALREADY_OWNER => Ok(()),
        _ => Err(NameError::Taken),
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
