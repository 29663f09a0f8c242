//! The timeout LiteLLM gives one attempt on a deployment, and where it came from.
//!
//! Modelled on `Router._get_timeout` of the pinned LiteLLM (1.100.5):
//! - plain requests: `litellm_params.timeout`, then `litellm_params.request_timeout`, then
//!   `litellm_settings.request_timeout`, then `router_settings.timeout`, then LiteLLM's
//!   default (`DEFAULT_REQUEST_TIMEOUT_SECONDS`, 6000 s);
//! - streams: `litellm_params.stream_timeout`, then `router_settings.stream_timeout`, then
//!   (only when `router_settings.timeout` is set) `litellm_settings.request_timeout`, then
//!   the plain chain.
//!
//! A case that waits for a timeout waits this long per attempt, so a team whose config only
//! sets a global 600 s timeout gets a case that says so instead of one that stalls CI.

use std::fmt;

/// LiteLLM's own default when nothing is configured (`constants.DEFAULT_REQUEST_TIMEOUT_SECONDS`).
pub const LITELLM_DEFAULT_S: f64 = 6000.0;

/// Where an effective timeout was configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    DeploymentTimeout,
    DeploymentRequestTimeout,
    DeploymentStreamTimeout,
    RouterStreamTimeout,
    RequestTimeout,
    RouterTimeout,
    LiteLlmDefault,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::DeploymentTimeout => "litellm_params.timeout",
            Self::DeploymentRequestTimeout => "litellm_params.request_timeout",
            Self::DeploymentStreamTimeout => "litellm_params.stream_timeout",
            Self::RouterStreamTimeout => "router_settings.stream_timeout",
            Self::RequestTimeout => "litellm_settings.request_timeout",
            Self::RouterTimeout => "router_settings.timeout",
            Self::LiteLlmDefault => "LiteLLM's default",
        })
    }
}

/// A timeout in seconds and its source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effective {
    pub seconds: f64,
    pub source: Source,
}

impl fmt::Display for Effective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s ({})", self.seconds, self.source)
    }
}

/// The timeouts configured outside any deployment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Global {
    pub router_timeout: Option<f64>,
    pub router_stream_timeout: Option<f64>,
    pub request_timeout: Option<f64>,
}

/// The timeouts one deployment sets itself.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Own {
    pub timeout: Option<f64>,
    pub request_timeout: Option<f64>,
    pub stream_timeout: Option<f64>,
}

/// LiteLLM treats 0 like unset (`a or b` in Python).
fn set(v: Option<f64>) -> Option<f64> {
    v.filter(|s| *s > 0.0)
}

pub fn plain(own: Own, g: Global) -> Effective {
    let chain = [
        (own.timeout, Source::DeploymentTimeout),
        (own.request_timeout, Source::DeploymentRequestTimeout),
        (g.request_timeout, Source::RequestTimeout),
        (g.router_timeout, Source::RouterTimeout),
    ];
    chain
        .into_iter()
        .find_map(|(v, source)| set(v).map(|seconds| Effective { seconds, source }))
        .unwrap_or(Effective {
            seconds: LITELLM_DEFAULT_S,
            source: Source::LiteLlmDefault,
        })
}

pub fn stream(own: Own, g: Global) -> Effective {
    let request_if_router = set(g.router_timeout).and(g.request_timeout);
    let chain = [
        (own.stream_timeout, Source::DeploymentStreamTimeout),
        (g.router_stream_timeout, Source::RouterStreamTimeout),
        (request_if_router, Source::RequestTimeout),
    ];
    chain
        .into_iter()
        .find_map(|(v, source)| set(v).map(|seconds| Effective { seconds, source }))
        .unwrap_or_else(|| plain(own, g))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_follows_litellm() {
        let g = Global {
            router_timeout: Some(30.0),
            router_stream_timeout: None,
            request_timeout: Some(45.0),
        };
        // The deployment's own setting wins.
        let own = Own {
            timeout: Some(2.0),
            ..Own::default()
        };
        assert_eq!(plain(own, g).seconds, 2.0);
        // Without it, request_timeout beats the router's timeout.
        assert_eq!(plain(Own::default(), g).source, Source::RequestTimeout);
        let g2 = Global {
            request_timeout: None,
            ..g
        };
        assert_eq!(
            plain(Own::default(), g2),
            Effective {
                seconds: 30.0,
                source: Source::RouterTimeout
            }
        );
        assert_eq!(plain(Own::default(), Global::default()).source, Source::LiteLlmDefault);
        // 0 counts as unset.
        assert_eq!(
            plain(
                Own {
                    timeout: Some(0.0),
                    ..Own::default()
                },
                g2
            )
            .seconds,
            30.0
        );
    }

    #[test]
    fn streams_have_their_own_chain_then_fall_back_to_the_plain_one() {
        let own = Own {
            timeout: Some(5.0),
            stream_timeout: Some(1.5),
            ..Own::default()
        };
        assert_eq!(stream(own, Global::default()).seconds, 1.5);
        let own = Own {
            timeout: Some(5.0),
            ..Own::default()
        };
        assert_eq!(stream(own, Global::default()).seconds, 5.0);
        // request_timeout applies to streams before the deployment's timeout only when the
        // router has its own timeout (LiteLLM only keeps it then).
        let g = Global {
            router_timeout: Some(30.0),
            router_stream_timeout: None,
            request_timeout: Some(45.0),
        };
        assert_eq!(stream(own, g).source, Source::RequestTimeout);
        let g = Global {
            router_timeout: None,
            ..g
        };
        assert_eq!(stream(own, g).source, Source::DeploymentTimeout);
    }
}
