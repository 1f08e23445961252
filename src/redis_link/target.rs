//! [`RedisTarget`]: a `REDIS_URL` value read once into one server or the seed
//! nodes of a cluster, without ever echoing the URL (it may hold a password).

/// Where Redis is: one server, or the seed nodes of a cluster.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server (`redis://host:port/db`).
    Single(String),
    /// A cluster: any of its nodes (the client discovers the rest).
    Cluster {
        nodes: Vec<String>,
        read_from_replicas: bool,
    },
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs may carry a password: show only the shape.
        match self {
            RedisTarget::Single(_) => f.write_str("RedisTarget::Single(..)"),
            RedisTarget::Cluster {
                nodes,
                read_from_replicas,
            } => f
                .debug_struct("RedisTarget::Cluster")
                .field("nodes", &nodes.len())
                .field("read_from_replicas", read_from_replicas)
                .finish(),
        }
    }
}

impl RedisTarget {
    /// Reads a `REDIS_URL` value: one URL or several separated by commas
    /// (a cluster). `cluster` forces the cluster client for a single seed
    /// node. Errors name what to fix and never echo the URL (it may hold a
    /// password).
    pub fn parse(
        urls: &str,
        cluster: bool,
        read_from_replicas: bool,
    ) -> Result<RedisTarget, String> {
        let nodes: Vec<String> = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        if nodes.is_empty() {
            return Err("expected a redis:// or rediss:// URL".into());
        }
        if let Some(i) = nodes
            .iter()
            .position(|u| !(u.starts_with("redis://") || u.starts_with("rediss://")))
        {
            return Err(format!(
                "URL number {} is not a redis:// or rediss:// URL",
                i + 1
            ));
        }
        if nodes.len() == 1 && !cluster {
            if read_from_replicas {
                return Err(
                    "replica reads need a cluster (several URLs or REDIS_CLUSTER=true)".into(),
                );
            }
            return Ok(RedisTarget::Single(
                nodes.into_iter().next().unwrap_or_default(),
            ));
        }
        Ok(RedisTarget::Cluster {
            nodes,
            read_from_replicas,
        })
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisTarget::Cluster { .. })
    }

    /// A URL for a plain (non-cluster) client of one node: the server
    /// itself, or the first seed of a cluster. Pub/sub uses it (a message
    /// published on any node of a cluster reaches subscribers on all).
    pub fn nodes(&self) -> Vec<String> {
        match self {
            RedisTarget::Single(url) => vec![url.clone()],
            RedisTarget::Cluster { nodes, .. } => nodes.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_is_a_server_several_are_a_cluster() {
        assert_eq!(
            RedisTarget::parse("redis://a:6379/0", false, false),
            Ok(RedisTarget::Single("redis://a:6379/0".into()))
        );
        assert_eq!(
            RedisTarget::parse("redis://a:1, redis://b:2", false, true),
            Ok(RedisTarget::Cluster {
                nodes: vec!["redis://a:1".into(), "redis://b:2".into()],
                read_from_replicas: true
            })
        );
        assert!(
            RedisTarget::parse("redis://a:1", true, false)
                .unwrap()
                .is_cluster()
        );
    }

    #[test]
    fn bad_lists_are_refused_without_echoing_the_url() {
        let err = RedisTarget::parse("redis://:secret@a:1,http://b", false, false).unwrap_err();
        assert!(err.contains("number 2"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        assert!(RedisTarget::parse(" , ", false, false).is_err());
        assert!(RedisTarget::parse("redis://a:1", false, true).is_err());
    }
}
