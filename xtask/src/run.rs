//! `cargo xtask run`: build everything, trace the bundled workload, print its events.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{compile, tools, vm::workspace_root};

/// Sends SIGINT to a child (the tracer drains, writes `tracer_stop` and exits 0).
pub fn interrupt(pid: u32) -> Result<()> {
    tools::run(Command::new("kill").args(["-INT", &pid.to_string()]))
}

/// Builds, starts the tracer, runs the workload beside it, prints the events, stops.
pub fn run() -> Result<i32> {
    tools::ensure_all()?;
    compile::build_host()?;
    let out_dir = workspace_root().join("target/xtask-run");
    std::fs::create_dir_all(&out_dir)?;

    let mut tracer = Command::new(compile::host_bin("sendfile-trace"))
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start sendfile-trace")?;
    let stdout = tracer.stdout.take().context("tracer stdout")?;
    let (started_tx, started_rx) = mpsc::channel();
    let printer = std::thread::spawn(move || -> usize {
        let mut lines = 0;
        let mut out = std::io::stdout().lock();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
            if lines == 0 {
                let _ = started_tx.send(line.contains("\"tracer_start\""));
            }
            lines += 1;
        }
        lines
    });
    match started_rx.recv_timeout(Duration::from_secs(30)) {
        Ok(true) => {}
        _ => {
            let _ = tracer.kill();
            let status = tracer.wait()?;
            bail!("the tracer did not start ({status}); its error is above");
        }
    }

    let workload_log = out_dir.join("workload.jsonl");
    let status = Command::new(compile::host_bin("sendfile-workload"))
        .stdout(std::fs::File::create(&workload_log)?)
        .status()
        .context("cannot run sendfile-workload")?;
    std::thread::sleep(Duration::from_millis(300));
    interrupt(tracer.id())?;
    let tracer_status = tracer.wait()?;
    let lines = printer.join().unwrap_or(0);
    eprintln!(
        "xtask: the tracer wrote {lines} lines ({tracer_status}); the workload ({status}) logged \
         its calls to {}",
        workload_log.display()
    );
    Ok(if tracer_status.success() && status.success() {
        0
    } else {
        1
    })
}
