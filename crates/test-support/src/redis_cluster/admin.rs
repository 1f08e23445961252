//! Talking to one node of a test cluster: admin commands over the `redis`
//! crate's synchronous connection (errors arrive as values, not as
//! `redis-cli` exit codes to parse), and reading what comes back — `CLUSTER
//! NODES` lines and `INFO` fields.

use std::io;
use std::time::Duration;

/// Connect, read and write timeout of one admin command. A node that does not
/// answer in this time is treated as not (yet) healthy.
pub(super) const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);

/// One line of `CLUSTER NODES`: what a node believes about one node.
#[derive(Debug, Clone)]
pub(super) struct NodeLine {
    pub(super) id: String,
    pub(super) port: u16,
    pub(super) myself: bool,
    pub(super) master: bool,
    /// The link is `connected` and no flag says `fail`, `fail?`,
    /// `handshake` or `noaddr`: this view counts the node as a working
    /// member of the cluster.
    pub(super) healthy: bool,
    /// The master's id for a replica.
    pub(super) master_id: Option<String>,
    /// Whether the node serves at least one slot range.
    pub(super) has_slots: bool,
}

/// Runs one command (`args`, name first) on one node over a fresh synchronous
/// connection with short timeouts. The error names the node and the command.
pub(super) fn admin<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> io::Result<T> {
    run(&mut connect(port)?, port, args)
}

/// A synchronous connection to one node with short timeouts.
pub(super) fn connect(port: u16) -> io::Result<redis::Connection> {
    let describe = |e: redis::RedisError| io::Error::other(format!("127.0.0.1:{port}: {e}"));
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).map_err(describe)?;
    let conn = client
        .get_connection_with_timeout(ADMIN_TIMEOUT)
        .map_err(describe)?;
    conn.set_read_timeout(Some(ADMIN_TIMEOUT))
        .map_err(describe)?;
    conn.set_write_timeout(Some(ADMIN_TIMEOUT))
        .map_err(describe)?;
    Ok(conn)
}

/// Runs one command on an open connection to the node on `port`.
pub(super) fn run<T: redis::FromRedisValue>(
    conn: &mut redis::Connection,
    port: u16,
    args: &[&str],
) -> io::Result<T> {
    let mut cmd = redis::Cmd::new();
    for arg in args {
        cmd.arg(*arg);
    }
    cmd.query(conn)
        .map_err(|e| io::Error::other(format!("127.0.0.1:{port}: {}: {e}", args.join(" "))))
}

/// Every line of `CLUSTER NODES` as seen by the node on `port`.
pub(super) fn cluster_nodes(port: u16) -> Result<Vec<NodeLine>, String> {
    let text: String = admin(port, &["CLUSTER", "NODES"]).map_err(|e| e.to_string())?;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            parse_node_line(line)
                .ok_or_else(|| format!("127.0.0.1:{port}: unreadable CLUSTER NODES line {line:?}"))
        })
        .collect()
}

/// The node on `port`'s own line of `CLUSTER NODES`: its role as it sees it.
pub(super) fn myself(port: u16) -> Result<NodeLine, String> {
    cluster_nodes(port)?
        .into_iter()
        .find(|line| line.myself)
        .ok_or_else(|| format!("127.0.0.1:{port}: CLUSTER NODES has no myself line"))
}

/// Parses `<id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch>
/// <link> <slot> <slot> …`.
pub(super) fn parse_node_line(line: &str) -> Option<NodeLine> {
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    if fields.len() < 8 {
        return None;
    }
    let address = fields[1].split(['@', ',']).next()?;
    let port = address.rsplit_once(':')?.1.parse().ok()?;
    let flags: Vec<&str> = fields[2].split(',').collect();
    Some(NodeLine {
        id: fields[0].to_string(),
        port,
        myself: flags.contains(&"myself"),
        master: flags.contains(&"master"),
        healthy: fields[7] == "connected"
            && !flags
                .iter()
                .any(|flag| ["fail", "fail?", "handshake", "noaddr"].contains(flag)),
        master_id: (fields[3] != "-").then(|| fields[3].to_string()),
        has_slots: fields.len() > 8,
    })
}

/// The value of `name:value` in an `INFO`-style reply.
pub(super) fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.trim_end()
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
    })
}

/// The value of `name=value` in a comma-separated `INFO` entry such as
/// `slave0:ip=127.0.0.1,port=7001,state=online,offset=42,lag=0`.
pub(super) fn field_in_list<'a>(entry: &'a str, name: &str) -> Option<&'a str> {
    let list = entry.split_once(':').map_or(entry, |(_, list)| list);
    list.split(',').find_map(|pair| {
        pair.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_master_line_with_slots() {
        let line = parse_node_line(
            "77d2 127.0.0.1:47101@48101 myself,master - 0 1795656658000 1 connected 0-5460",
        )
        .unwrap();
        assert_eq!(line.port, 47101);
        assert!(line.myself && line.master && line.has_slots && line.healthy);
        assert_eq!(line.master_id, None);
    }

    #[test]
    fn parses_a_failed_replica_line() {
        let line = parse_node_line(
            "f072 127.0.0.1:47106@48106,host slave,fail 0d0e 0 1795656659242 2 disconnected",
        )
        .unwrap();
        assert_eq!(line.port, 47106);
        assert!(!line.master && !line.healthy && !line.has_slots);
        assert_eq!(line.master_id.as_deref(), Some("0d0e"));
    }

    #[test]
    fn reads_info_fields() {
        let info = "# Cluster\r\ncluster_state:ok\r\ncluster_slots_assigned:16384\r\n";
        assert_eq!(field(info, "cluster_state"), Some("ok"));
        assert_eq!(field(info, "cluster_slots_assigned"), Some("16384"));
        assert_eq!(field(info, "cluster_slots"), None);
    }

    #[test]
    fn reads_a_replica_entry_of_info_replication() {
        let entry = "slave0:ip=127.0.0.1,port=7001,state=online,offset=42,lag=0";
        assert_eq!(field_in_list(entry, "offset"), Some("42"));
        assert_eq!(field_in_list(entry, "port"), Some("7001"));
        assert_eq!(field_in_list(entry, "off"), None);
    }
}
