//! A command's failure: the message for stderr and the exit status (the command line
//! contract: 2 for a usage error, 3 for a `seed` that timed out or could not publish,
//! 1 for everything else).

use swarmbak_format::FormatError;
use swarmbak_node::{
    AgentError, ConfigError, ControlError, FetchError, HealthError, PublishError, SeedError,
};

pub struct Failure {
    pub status: u8,
    pub message: String,
}

impl Failure {
    pub fn new(status: u8, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }
    /// A usage error (exit status 2).
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(2, message)
    }
}

macro_rules! status_one {
    ($($t:ty),*) => {$(
        impl From<$t> for Failure {
            fn from(e: $t) -> Failure {
                Failure::new(1, e.to_string())
            }
        }
    )*};
}

status_one!(
    FormatError,
    swarmbak_format::CryptoError,
    std::io::Error,
    FetchError,
    HealthError,
    AgentError,
    ControlError,
    PublishError
);

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Failure {
        let status = if matches!(e, ConfigError::Invalid(_)) {
            2
        } else {
            1
        };
        Failure::new(status, e.to_string())
    }
}

impl From<SeedError> for Failure {
    fn from(e: SeedError) -> Failure {
        let status = match &e {
            SeedError::NoTracker | SeedError::NotEnrolled => 2,
            e if e.is_timeout() => 3,
            _ => 1,
        };
        Failure::new(status, e.to_string())
    }
}
