//! Log lines gathered in memory and written out in batches.
//!
//! tracing-appender's non-blocking writer hands every line to its writer thread through a
//! channel, and under load the thread drains the channel faster than lines arrive, parks, and
//! is woken again by the next line: a futex wake per line or two, plus the thread's own spinning
//! before it parks (about 13,600 `sched_yield`s and 15,000 futex calls for 20,000 reviews,
//! measured with `strace -c`). Here a line is only copied into a buffer; the writer thread is
//! woken once when the buffer stops being empty, waits [`INTERVAL`] for more lines to gather, and
//! writes them in one go. Nothing is dropped: a producer that finds the buffer over [`HIGH_WATER`]
//! writes it out itself, and dropping the [`Guard`] writes what is left.

use std::{
    io::{self, Write},
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    thread::JoinHandle,
    time::Duration,
};

use tracing_subscriber::fmt::MakeWriter;

/// How long the writer thread lets lines gather after the first of a batch arrives.
const INTERVAL: Duration = Duration::from_millis(20);

/// A buffer this large is written out by the line that filled it, so that a burst faster than
/// the output takes cannot grow the buffer without bound.
const HIGH_WATER: usize = 256 * 1024;

struct Pending {
    lines: Vec<u8>,
    stopping: bool,
}

/// The output, and the buffer a batch is moved into while it is written: taking a batch and
/// writing it happen under this one lock, so batches reach the output in the order they were
/// taken.
struct Output<W> {
    sink: W,
    batch: Vec<u8>,
}

struct Shared<W> {
    /// No writer thread could be started: every line is written as it is logged.
    unbatched: bool,
    pending: Mutex<Pending>,
    arrived: Condvar,
    output: Mutex<Output<W>>,
}

/// Poison only means another thread panicked while logging; the bytes are still good.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<W: Write> Shared<W> {
    /// Writes out everything logged so far. A failed write (stderr closed) loses that batch:
    /// there is nowhere left to say so.
    fn flush(&self) {
        let mut output = lock(&self.output);
        let Output { sink, batch } = &mut *output;
        std::mem::swap(&mut lock(&self.pending).lines, batch);
        if batch.is_empty() {
            return;
        }
        let _ = sink.write_all(batch).and_then(|()| sink.flush());
        batch.clear();
    }

    fn append(&self, line: &[u8]) {
        let mut pending = lock(&self.pending);
        let was_empty = pending.lines.is_empty();
        pending.lines.extend_from_slice(line);
        let full = self.unbatched || pending.lines.len() >= HIGH_WATER;
        drop(pending);
        if full {
            self.flush();
        } else if was_empty {
            self.arrived.notify_one();
        }
    }
}

/// The [`MakeWriter`] for the subscriber: every line goes into the shared buffer.
pub struct Batched<W> {
    shared: Arc<Shared<W>>,
}

/// Keep until exit: dropping it stops the writer thread and writes out what is left.
#[must_use = "lines still buffered are lost when the guard is not kept until exit"]
pub struct Guard<W: Write + Send + 'static> {
    shared: Arc<Shared<W>>,
    thread: Option<JoinHandle<()>>,
}

/// A batching writer over `sink`, with its writer thread started; without a thread to spare
/// (the process is at its limit), a writer that writes every line as it is logged.
pub fn batched<W: Write + Send + 'static>(sink: W) -> (Batched<W>, Guard<W>) {
    let mut shared = Arc::new(Shared {
        unbatched: false,
        pending: Mutex::new(Pending {
            lines: Vec::new(),
            stopping: false,
        }),
        arrived: Condvar::new(),
        output: Mutex::new(Output {
            sink,
            batch: Vec::new(),
        }),
    });
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("stsguard-log".to_owned())
            .spawn(move || write_batches(&shared))
            .ok()
    };
    // The failed spawn dropped its clone, so this is the only reference.
    if thread.is_none()
        && let Some(shared) = Arc::get_mut(&mut shared)
    {
        shared.unbatched = true;
    }
    (
        Batched {
            shared: shared.clone(),
        },
        Guard { shared, thread },
    )
}

/// The writer thread: asleep while nothing is buffered; once a line arrives, waits
/// [`INTERVAL`] (or for the stop), then writes the batch.
fn write_batches<W: Write>(shared: &Shared<W>) {
    loop {
        let mut pending = lock(&shared.pending);
        while pending.lines.is_empty() && !pending.stopping {
            pending = shared
                .arrived
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if pending.stopping {
            return;
        }
        let (pending, _) = shared
            .arrived
            .wait_timeout_while(pending, INTERVAL, |p| !p.stopping)
            .unwrap_or_else(PoisonError::into_inner);
        let stopping = pending.stopping;
        drop(pending);
        shared.flush();
        if stopping {
            return;
        }
    }
}

impl<W: Write + Send + 'static> Drop for Guard<W> {
    fn drop(&mut self) {
        lock(&self.shared.pending).stopping = true;
        self.shared.arrived.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.shared.flush();
    }
}

/// One line's writer, as the subscriber asks for it per event.
pub struct Line<'a, W> {
    shared: &'a Shared<W>,
}

impl<W: Write> Write for Line<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.shared.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + 'static> MakeWriter<'a> for Batched<W> {
    type Writer = Line<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        Line {
            shared: &self.shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read while the writer still holds it.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            lock(&self.0).push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn lines(sink: &Sink) -> Vec<String> {
        let bytes: Vec<u8> = lock(&sink.0).concat();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn every_line_arrives_in_order_by_the_time_the_guard_is_dropped() {
        let sink = Sink::default();
        let (writer, guard) = batched(sink.clone());
        let writer = Arc::new(writer);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        // Long lines, so that some batches reach the high-water mark.
                        let line = format!("{t} {i:05} {}\n", "x".repeat(100));
                        writer.make_writer().write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(guard);
        let lines = lines(&sink);
        assert_eq!(lines.len(), 20_000);
        for t in 0..4 {
            let own: Vec<&String> = lines
                .iter()
                .filter(|l| l.starts_with(&format!("{t} ")))
                .collect();
            assert_eq!(own.len(), 5_000, "thread {t}");
            assert!(
                own.windows(2).all(|w| w[0] < w[1]),
                "thread {t}'s lines out of order"
            );
        }
        // Batched: far fewer writes than lines.
        let writes = lock(&sink.0).len();
        assert!(writes < 2_000, "{writes} writes for 20,000 lines");
    }

    #[test]
    fn a_lone_line_is_written_without_waiting_for_more() {
        let sink = Sink::default();
        let (writer, _guard) = batched(sink.clone());
        writer.make_writer().write_all(b"hello\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while lines(&sink).is_empty() {
            assert!(std::time::Instant::now() < deadline, "line never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(lines(&sink), ["hello"]);
    }
}
