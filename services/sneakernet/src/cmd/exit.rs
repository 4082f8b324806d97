//! Exit codes scripts can rely on (README, "Command line"): 0 done, 1 a failure or refusal,
//! 2 a usage mistake (clap's own code for a wrong flag), 3 not logged in or the login
//! expired, 4 the node cannot be reached.

/// A failure or refusal (also every error that carries no code).
pub const FAILURE: u8 = 1;
/// A mistake in the command line.
pub const USAGE: u8 = 2;
/// No login, or one that expired: `sneakernet login` again.
pub const UNAUTHENTICATED: u8 = 3;
/// The node did not answer: wrong address, not running, TLS mismatch.
pub const UNREACHABLE: u8 = 4;

/// An error carrying the exit code the process ends with.
#[derive(Debug)]
pub struct Exit {
    /// The exit code.
    pub code: u8,
    message: String,
}

impl Exit {
    /// An error with `code` and a one-line `message`.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// A usage mistake found after parsing (exit code 2).
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    Exit::new(USAGE, message).into()
}

/// A missing or expired login (exit code 3).
pub fn unauthenticated(message: impl Into<String>) -> anyhow::Error {
    Exit::new(UNAUTHENTICATED, message).into()
}

/// The exit code for `error`: the code of the first [`Exit`] in its chain, else
/// [`FAILURE`].
pub fn code_of(error: &anyhow::Error) -> u8 {
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<Exit>().map(|exit| exit.code))
        .unwrap_or(FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_code_survives_added_context() {
        let error = Err::<(), _>(anyhow::Error::from(Exit::new(UNREACHABLE, "down")))
            .context("rent")
            .unwrap_err();
        assert_eq!(code_of(&error), UNREACHABLE);
        assert_eq!(format!("{error:#}"), "rent: down");
        assert_eq!(code_of(&anyhow::anyhow!("plain")), FAILURE);
    }
}
