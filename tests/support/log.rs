//! What the code under test logs in this test binary, captured so a test
//! can show that no secret ever reaches a log line.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

type Captured = Arc<Mutex<Vec<u8>>>;

/// Starts capturing (once per binary) every log line at info and above.
pub fn captured() -> Captured {
    static LOG: OnceLock<Captured> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Captured::default();
        let sink = log.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .try_init();
        log
    })
    .clone()
}

/// Everything captured so far.
pub fn text() -> String {
    String::from_utf8_lossy(&captured().lock().expect("the captured log")).into_owned()
}

struct Sink(Captured);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("the captured log")
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
