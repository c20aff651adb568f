//! Start-up: the initrd, the request, the load, the jump.

use crate::builtin;
use crate::glue::{self, Clk, Con, Mem, STDERR, Sys, Umem};
use crate::layout;
use crate::procs::Procs;
use crate::redirect::{self, State};
use alloc::boxed::Box;
use alloc::format;
use alloc::vec::Vec;
use libos_async::{info, sys};
use libos_posix::exec;
use libos_posix::fs::Fs;
use libos_posix::mm::Layout;
use libos_posix::proc::ExecLayout;
use libos_posix::request;
use libos_posix::syscalls::Process;

/// Nothing to run (no initrd, no request, no such program).
const NOT_FOUND: i32 = 127;
/// The program cannot be run (not a static x86-64 executable, no memory).
const CANNOT_EXEC: i32 = 126;

/// One line on the program's standard error, then the status to exit with.
fn fail(status: i32, line: &str) -> i32 {
    glue::emit(STDERR, format!("posix: {line}\n").as_bytes());
    crate::fsserver::stop();
    status
}

/// Runs the requested program (start argument 0) or a built-in one
/// ([`builtin`]); returns only on failure (the status).
pub fn run(arg: u64) -> i32 {
    let start_tsc = sys::rdtsc();
    let builtin = builtin::image(arg);
    if arg != 0 && builtin.is_none() {
        return fail(NOT_FOUND, &format!("no built-in program {arg}"));
    }
    let size = match sys::initrd_map(0) {
        Ok(0) | Err(_) => return fail(NOT_FOUND, "no initrd"),
        Ok(n) => n,
    };
    if let Err(e) = sys::initrd_map(layout::INITRD_VA) {
        return fail(NOT_FOUND, &format!("cannot map the initrd: {e:?}"));
    }
    glue::INITRD_LEN.store(size, core::sync::atomic::Ordering::Relaxed);
    glue::note_initrd_frames();
    // Every process maps the initrd itself (`procs::child_side`): a fork
    // need not walk its thousands of pages only to skip them.
    let page = libos_async::abi::PAGE_SIZE;
    let pages = size.div_ceil(page) * page;
    if let Err(e) = libos_async::fork::not_shared_with_children(layout::INITRD_VA, pages) {
        glue::log_line(&format!("posix: the initrd stays in fork's sharing: {e:?}"));
    }
    // SAFETY: InitrdMap mapped `size` bytes read-only at INITRD_VA (all or
    // nothing, checked above) for the rest of this environment's life; no
    // one can write them.
    let archive: &'static [u8] =
        unsafe { core::slice::from_raw_parts(layout::INITRD_VA as *const u8, size as usize) };
    let mut fs = match Fs::from_initrd(archive, Box::new(Con::new())) {
        Ok(fs) => fs,
        Err(e) => return fail(NOT_FOUND, &format!("the initrd's tree is malformed: {e:?}")),
    };
    let req = if builtin.is_some() {
        request::Request { argv: alloc::vec![b"builtin".to_vec()], ..Default::default() }
    } else {
        match fs.lookup(fs.root(), request::PATH, true).and_then(|i| fs.contents(i)) {
            Ok(bytes) => match request::parse(&bytes) {
                Ok(r) => r,
                Err(e) => return fail(NOT_FOUND, &format!("bad run request /etc/exo-run: {e}")),
            },
            Err(_) => return fail(NOT_FOUND, "no run request /etc/exo-run in the initrd"),
        }
    };
    let path = req.argv[0].clone();
    let shown = alloc::string::String::from_utf8_lossy(&path).into_owned();

    let pages = glue::pages();
    let mut sys_glue = Sys { seed: sys::rdtsc() };
    let random = glue::random16(&mut sys_glue);
    let clock = Clk { tsc0: sys::rdtsc(), hz: info().tsc_hz };
    let clock_tsc0 = clock.tsc0;

    // The plan first: the break starts after the image.
    let cwd = req.cwd.clone().unwrap_or_else(|| b"/".to_vec());
    let image: &[u8] = if let Some(b) = &builtin {
        b
    } else {
        let start = match fs.lookup(fs.root(), &cwd, true) {
            Ok(d) => d,
            Err(e) => return fail(NOT_FOUND, &format!("working directory: errno {}", e.0)),
        };
        match fs.lookup(start, &path, true) {
            Ok(ino) if fs.is_dir(ino) => {
                return fail(CANNOT_EXEC, &format!("{shown}: is a directory"));
            }
            Ok(ino) => match fs.archive_bytes(ino) {
                Some(b) => b,
                None => return fail(CANNOT_EXEC, &format!("{shown}: not a regular file")),
            },
            Err(_) => return fail(NOT_FOUND, &format!("{shown}: no such file")),
        }
    };
    let plan = match exec::plan(image, layout::PIE_BIAS, layout::PROGRAM_END) {
        Ok(p) => p,
        Err(e) => return fail(CANNOT_EXEC, &format!("{shown}: cannot execute: {e}")),
    };
    let lay = Layout {
        min_addr: layout::MIN_ADDR,
        user_end: layout::PROGRAM_END,
        brk_start: plan.end,
        brk_limit: layout::BRK_LIMIT.max(plan.end),
        mmap_lo: layout::MMAP_LO,
        mmap_hi: layout::MMAP_HI,
    };
    // One tree for the whole run: a server environment owns it from here
    // (it is forked with our copy and never returns here); without one,
    // each process keeps its own copy.
    if builtin.is_none() {
        crate::procs::create_group_table();
        crate::fsserver::start(&mut fs);
    }
    let mut process = Process::new(
        fs,
        lay,
        info().env_id as i32,
        Box::new(Mem { pages: pages.clone() }),
        Box::new(clock),
        Box::new(sys_glue),
    );
    process.set_pipe_host(Box::new(crate::pipes::PipeGlue { tsc0: clock_tsc0, hz: info().tsc_hz }));
    process.set_chan_host(Box::new(crate::chans::ChanGlue::default()));
    if let Err(e) = process.chdir(&cwd) {
        return fail(NOT_FOUND, &format!("cannot enter {:?}: errno {}", cwd, e.0));
    }
    // The process model: fork/wait over child environments, execve here.
    process.set_proc_host(Box::new(Procs));
    process.proc.layout = Some(ExecLayout {
        pie_bias: layout::PIE_BIAS,
        stack_top: layout::STACK_TOP,
        stack_size: layout::STACK_SIZE,
        brk_limit: layout::BRK_LIMIT,
    });
    process.proc.exe = if path.first() == Some(&b'/') {
        path.clone()
    } else {
        let mut abs = cwd.clone();
        if abs.last() != Some(&b'/') {
            abs.push(b'/');
        }
        abs.extend_from_slice(&path);
        abs
    };
    let mut umem = Umem { pages };
    let argv: Vec<&[u8]> = req.argv.iter().map(Vec::as_slice).collect();
    let envp: Vec<&[u8]> = req.envp.iter().map(Vec::as_slice).collect();
    let entry = match process.load(
        image,
        layout::PIE_BIAS,
        &argv,
        &envp,
        &random,
        layout::STACK_TOP,
        layout::STACK_SIZE,
        &mut umem,
    ) {
        Ok(e) => e,
        Err(e) => return fail(CANNOT_EXEC, &format!("{shown}: cannot load: {e}")),
    };
    // `enter_program` pushes below the start stack: back that page.
    if umem.check(entry.rsp - 8, 8, true).is_err() {
        return fail(CANNOT_EXEC, &format!("{shown}: cannot load: no memory for its stack"));
    }
    drop(argv);
    drop(envp);
    drop(req);
    if let Err(e) = redirect::catch_program_exceptions() {
        return fail(CANNOT_EXEC, &format!("exception handler refused: {e:?}"));
    }
    redirect::install(State { process, umem, start_tsc, entered_tsc: sys::rdtsc() });
    if let Some(Err(e)) = redirect::state().map(crate::signal::install) {
        return fail(CANNOT_EXEC, &format!("signal upcall refused: {e:?}"));
    }
    if let Err(e) = redirect::register() {
        return fail(CANNOT_EXEC, &format!("system-call redirection refused: {e:?}"));
    }
    redirect::enter_program(entry.rip, entry.rsp)
}
