//! Exit codes, and the error type that carries one. The codes are part of the interface
//! (docs/cli.md): scripts branch on them, so a number is never reused for another meaning.

/// Something did not verify: a bundle, a proof, a checkpoint's signatures, an audit found
/// two checkpoints that cannot both be true, or a node's data does not hash to its ids.
pub const EXIT_VERIFY_FAILED: u8 = 1;
/// Bad input: usage, an unreadable or malformed file, an invalid value (the value is named),
/// or a request the node refused as malformed.
pub const EXIT_BAD_INPUT: u8 = 2;
/// The ledger refused: a record was rejected by its rules (the receipt's reason is
/// printed), or the node refused the request (bad signature, role, state rule, duplicate).
pub const EXIT_REFUSED: u8 = 3;
/// The node could not be reached, had no leader within `--timeout`, or failed otherwise.
pub const EXIT_UNAVAILABLE: u8 = 4;
/// The node does not know the record, code, organisation or checkpoint asked for.
pub const EXIT_NOT_FOUND: u8 = 5;

/// A failed command: the exit code, and the error to print unless the command already
/// reported the failure itself (a rejected receipt, audit evidence).
pub struct Failure {
    pub code: u8,
    pub err: Option<anyhow::Error>,
}

impl Failure {
    pub fn new(code: u8, err: anyhow::Error) -> Failure {
        Failure { code, err: Some(err) }
    }

    /// The command printed its own report; only the exit code remains.
    pub fn reported(code: u8) -> Failure {
        Failure { code, err: None }
    }

    pub fn bad_input(err: anyhow::Error) -> Failure {
        Failure::new(EXIT_BAD_INPUT, err)
    }

    pub fn verify_failed(err: anyhow::Error) -> Failure {
        Failure::new(EXIT_VERIFY_FAILED, err)
    }
}

/// `result.or_exit(CODE)`: attach an exit code to an `anyhow` error.
pub trait OrExit<T> {
    fn or_exit(self, code: u8) -> Result<T, Failure>;
    fn or_bad_input(self) -> Result<T, Failure>;
}

impl<T> OrExit<T> for anyhow::Result<T> {
    fn or_exit(self, code: u8) -> Result<T, Failure> {
        self.map_err(|e| Failure::new(code, e))
    }

    fn or_bad_input(self) -> Result<T, Failure> {
        self.or_exit(EXIT_BAD_INPUT)
    }
}
