//! `serve -d`: the gateway in the background, with a readiness handshake.
//! The parent process waits until the child says it is ready (listeners
//! bound, or for `-u` about to take the old process's sockets) or why it
//! failed, and exits 0 or 1 accordingly: a service manager sees a failed
//! start as one, and finds the pid file written when the parent exits.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Why the gateway could not go to the background.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot run in the background: {0}")]
    Fork(std::io::Error),
    #[error("serve -d needs server.error_log: a daemon has no terminal to log to")]
    WithoutLog,
    #[error("server.error_log {file}: {source}")]
    ErrorLog {
        file: String,
        source: std::io::Error,
    },
}

/// The child's end of the handshake.
struct Readiness {
    pipe: std::fs::File,
    pid_file: PathBuf,
}

static READINESS: parking_lot::Mutex<Option<Readiness>> = parking_lot::Mutex::new(None);

/// Forks; the parent waits for [`ready`] or [`failed`] in the child and
/// exits. In the child: a new session, stdin/stdout on /dev/null, stderr
/// appended to `error_log`. Call before any thread starts.
#[allow(unsafe_code)]
pub fn daemonize(error_log: Option<&str>, pid_file: &Path) -> Result<(), DaemonError> {
    use std::os::fd::AsRawFd;
    let file = error_log.ok_or(DaemonError::WithoutLog)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .map_err(|source| DaemonError::ErrorLog {
            file: file.to_string(),
            source,
        })?;
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(DaemonError::Fork(std::io::Error::last_os_error()));
    }
    // SAFETY: pipe2 succeeded: both descriptors are open and owned by nothing else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no other thread exists yet (the caller's contract).
    match unsafe { libc::fork() } {
        -1 => Err(DaemonError::Fork(std::io::Error::last_os_error())),
        0 => {
            drop(read_end);
            // SAFETY: setsid has no preconditions in a fresh child; the
            // descriptors dup2 reads are open.
            unsafe {
                libc::setsid();
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if null >= 0 {
                    libc::dup2(null, 0);
                    libc::dup2(null, 1);
                    libc::close(null);
                }
                libc::dup2(log.as_raw_fd(), 2);
            }
            *READINESS.lock() = Some(Readiness {
                pipe: std::fs::File::from(write_end),
                pid_file: pid_file.to_path_buf(),
            });
            Ok(())
        }
        child => {
            drop(write_end);
            std::process::exit(wait_for(child, std::fs::File::from(read_end), file));
        }
    }
}

/// The parent: the exit code the child's word gives.
fn wait_for(child: i32, mut pipe: std::fs::File, log: &str) -> i32 {
    let mut word = String::new();
    let _ = pipe.read_to_string(&mut word);
    match word.strip_prefix("ok") {
        Some(_) => 0,
        None if word.is_empty() => {
            eprintln!("switchyard: process {child} exited while starting (see {log})");
            1
        }
        None => {
            eprintln!("switchyard: {word}");
            1
        }
    }
}

/// The child is ready: writes the pid file (whole, by rename) and lets
/// the parent exit 0. Does nothing outside `serve -d`, or a second time.
pub fn ready() {
    let Some(mut r) = READINESS.lock().take() else {
        return;
    };
    let pid = std::process::id();
    let tmp = r.pid_file.with_extension("pid.tmp");
    let written =
        std::fs::write(&tmp, format!("{pid}\n")).and_then(|()| std::fs::rename(&tmp, &r.pid_file));
    let word = match written {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("pid file {}: {e}", r.pid_file.display()),
    };
    let _ = r.pipe.write_all(word.as_bytes());
    if word != "ok" {
        log::error!("{word}");
        std::process::exit(1);
    }
}

/// [`ready`] once every listener in `addrs` accepts connections (Pingora
/// binds them as the server starts running), from a thread, within 10 s;
/// else [`failed`] and exit. `addrs`: plain TCP listeners only (a bare
/// connect would be a failed handshake on TLS or PROXY protocol ones).
/// Does nothing outside `serve -d`.
pub fn ready_once_listening(addrs: Vec<String>) {
    if READINESS.lock().is_none() {
        return;
    }
    let waiting = std::thread::Builder::new()
        .name("switchyard-ready".into())
        .spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            for addr in addrs.iter().filter_map(|a| local_end(a)) {
                while std::net::TcpStream::connect_timeout(
                    &addr,
                    std::time::Duration::from_millis(200),
                )
                .is_err()
                {
                    if std::time::Instant::now() > deadline {
                        let why = format!("{addr} does not accept connections after 10 s");
                        log::error!("{why}: exiting");
                        failed(&why);
                        std::process::exit(1);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
            ready();
        });
    if waiting.is_err() {
        ready();
    }
}

/// Where to reach a listener from this host (`0.0.0.0` → loopback); `None`
/// for a Unix socket or an address that does not parse.
fn local_end(addr: &str) -> Option<std::net::SocketAddr> {
    let mut a: std::net::SocketAddr = addr.parse().ok()?;
    if a.ip().is_unspecified() {
        a.set_ip(match a.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Some(a)
}

/// The child could not start: the parent prints `why` and exits 1.
pub fn failed(why: &str) {
    if let Some(mut r) = READINESS.lock().take() {
        let _ = r.pipe.write_all(why.as_bytes());
    }
}
