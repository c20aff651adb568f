//! The bootstrap processor's path from the PVH entry to the chosen mode.
//!
//! Order matters and is the order below: console; start info and command
//! line; frame allocator and heap (everything after may allocate); this
//! core's GDT, IDT and per-core state; TSC; ACPI; local APIC and timer;
//! the APs; the boot line; then the mode (`run`, `test`, `bench`,
//! `panic-test`).

use super::console::{self, kprintln};
use super::{
    acpi, apic, bench, boot, cpu, env, gdt, interrupts, ktest, memory, percpu, sched, smp, time,
};
use kernel::cmdline::{Cmdline, ConsoleMode, Mode};
use kernel::pvh::{self, StartInfo};

/// The BSP's first Rust code, called by the boot stub with the physical
/// address of `hvm_start_info`.
#[unsafe(no_mangle)]
extern "C" fn kernel_bsp_main(start_info_phys: u32) -> ! {
    console::init();
    let info = memory::boot_phys_slice(u64::from(start_info_phys), pvh::START_INFO_SIZE)
        .ok_or(pvh::PvhError::Truncated)
        .and_then(StartInfo::parse)
        .unwrap_or_else(|e| panic!("bad PVH start info: {e:?}"));

    let mut text_buf = [0u8; 1024];
    let raw_cmdline =
        memory::boot_phys_slice(info.cmdline_paddr, 1024).filter(|_| info.cmdline_paddr != 0);
    let n = raw_cmdline.map_or(0, |raw| pvh::cmdline_text(raw, &mut text_buf));
    let text = core::str::from_utf8(&text_buf[..n]).unwrap_or("");
    // The heap comes first: parsing the command line allocates.
    let (initrd, unused_ram) = init_memory(&info);
    let cmdline = Cmdline::parse(text);
    console::init_log(cmdline.log);
    console::set_split(cmdline.console == ConsoleMode::Split);
    if let Some(tag) = &cmdline.exit_tag {
        env::set_exit_tag(tag);
    }
    if unused_ram > 0 {
        log::warn!("{} MiB of RAM above 4 GiB is not used yet", unused_ram >> 20);
    }
    log::info!("command line: {text:?}");
    for word in &cmdline.unknown {
        log::warn!("unknown command line word {word:?} ignored");
    }

    // Idle cores keep this many frames zeroed ahead (`zero_pool=`).
    memory::set_zero_pool_target(u64::from(cmdline.zero_pool));

    let trap_stack_top = gdt::init_this_cpu();
    super::paging::init();
    interrupts::init_this_cpu();
    super::mailbox::init();
    super::syscall::init_this_cpu();
    super::xstate::init_this_cpu();
    interrupts::disable_legacy_pic();

    let tsc_hz = time::calibrate();
    let mut bsp_apic = apic::Apic::enable_this_cpu();
    let timer_hz = bsp_apic.calibrate_timer();
    apic::set_tick_rate(timer_hz, cmdline.tick_hz);
    bsp_apic.start_timer();
    super::mailbox::init_this_cpu(0);
    let me = percpu::init_this_cpu(
        0,
        bsp_apic.id(),
        trap_stack_top.as_u64(),
        boot::boot_stack_top_addr(),
    );
    apic::install(bsp_apic);
    super::tlb::init_this_cpu(0, true);
    super::env::init_this_cpu();
    log::info!(
        "TSC {} MHz, APIC timer {} MHz, idle tick {} Hz, {} slots of {} us per core, {} MiB free",
        tsc_hz / 1_000_000,
        timer_hz / 1_000_000,
        cmdline.tick_hz,
        cmdline.slots,
        cmdline.slot_us,
        (memory::free_frames() * 4096) >> 20
    );

    let processors = acpi::processors(info.rsdp_paddr).unwrap_or_else(|e| panic!("ACPI: {e}"));
    log::info!("MADT: {} processors, BSP APIC id {}", processors.apic_ids.len(), me.apic_id);
    route_console_input(&processors, me.apic_id);
    smp::start_aps(processors.apic_ids);
    x86_64::instructions::interrupts::enable();

    if let Some(initrd) = initrd {
        env::set_initrd(initrd);
        // Its shared leaf tables now, so that the frames they take are the
        // kernel's from boot on (no environment's `InitrdMap` pays for them).
        env::build_initrd_tables();
    }
    env::set_quota(cmdline.quota);
    kprintln!("exo: boot ok cores={} apic={}", percpu::online_cpus(), apic::mode_name());
    if let Some(x) = super::xstate::features() {
        log::info!(
            "vector state: {:?}, XCR0 {:#x}, {} bytes, AVX {}",
            x.method,
            x.xcr0,
            x.size,
            if x.avx { "on" } else { "absent" }
        );
    }
    super::slots::init(
        super::slots::Config {
            slots: cmdline.slots,
            slot_us: cmdline.slot_us,
            grace_us: cmdline.grace_us,
            slots_reserved: cmdline.slots_reserved,
        },
        percpu::online_cpus(),
    );
    if cmdline.trace > 0 {
        match super::ktrace::start_from_cmdline(cmdline.trace as usize) {
            0 => kprintln!("exo: kernel trace off: no heap for {} records per core", cmdline.trace),
            records => kprintln!("exo: kernel trace on, {records} records per core"),
        }
    }
    let all_cores = u64::MAX >> (64 - percpu::online_cpus());
    // Core 0 runs the test and benchmark harnesses; in `run` mode it joins
    // the others in running environments once the demo is started.
    env::set_user_cores(if cmdline.mode == Mode::Run { all_cores } else { all_cores & !1 });

    match cmdline.mode {
        Mode::Run => {
            if let Some(m) = &cmdline.memrevoke {
                env::repossess::arm_trigger(&m.app, m.frames, m.ms);
            }
            run_demo(&cmdline.init, cmdline.console == ConsoleMode::Split, cmdline.stdin_console)
        }
        Mode::Test => {
            let passed = ktest::run_all(cmdline.tests.as_deref());
            super::ktrace::dump();
            cpu::exit_qemu(passed)
        }
        Mode::Bench => {
            bench::run_all(cmdline.bench_samples as usize, all_cores, cmdline.benches.as_deref())
        }
        Mode::PanicTest => panic_test_outer(),
    }
}

/// Routes COM1's receive interrupt (ISA IRQ 4, through the I/O APIC the
/// MADT names, with its override if any) to this core, the BSP. Without an
/// I/O APIC console input is off (logged), nothing else.
fn route_console_input(madt: &acpi::Processors, bsp_apic_id: u32) {
    const COM1_IRQ: u8 = 4;
    super::trap::register(super::trap::vectors::CONSOLE_RX, env::terminal::on_receive);
    let route = kernel::serialin::isa_route(COM1_IRQ, &madt.isa_overrides);
    match super::ioapic::route(&madt.io_apics, route, super::trap::vectors::CONSOLE_RX, bsp_apic_id)
    {
        Ok(()) => log::info!("console input: COM1 IRQ {COM1_IRQ} on GSI {}", route.gsi),
        Err(e) => log::warn!("console input off: {e}"),
    }
}

/// Feeds the memory map to the frame allocator, then sets up the heap.
/// Returns the initrd's bytes if there is one, and how much RAM lies above
/// the direct map (unused).
fn init_memory(info: &StartInfo) -> (Option<&'static [u8]>, u64) {
    let memmap = memory::boot_phys_slice(info.memmap_paddr, info.memmap_bytes())
        .expect("PVH memory map outside the direct map");
    let modlist = memory::boot_phys_slice(info.modlist_paddr, info.modlist_bytes())
        .expect("PVH module list outside the direct map");
    let initrd = (info.nr_modules > 0)
        .then(|| pvh::parse_module(modlist, 0).ok())
        .flatten()
        .filter(|m| m.size > 0);

    let page_up = |x: u64| x.next_multiple_of(4096);
    let mut reserved = heapless_ranges::Ranges::default();
    reserved.push(0..0x10_0000); // real-mode area, BIOS data, AP trampoline
    reserved.push(boot::kernel_image_phys());
    if let Some(m) = initrd {
        reserved.push(m.paddr..page_up(m.paddr + m.size));
    }
    for (addr, len) in [
        (info.memmap_paddr, info.memmap_bytes() as u64),
        (info.modlist_paddr, info.modlist_bytes() as u64),
        (info.cmdline_paddr, 1024),
    ] {
        if addr != 0 {
            reserved.push(addr..addr + len);
        }
    }
    let regions =
        (0..info.memmap_entries as usize).filter_map(|i| pvh::parse_memmap(memmap, i).ok());
    let mut above_limit = 0u64;
    for r in regions.clone() {
        if r.kind == pvh::E820_RAM && r.addr + r.size > memory::DIRECT_MAP_LIMIT {
            above_limit += r.addr + r.size - r.addr.max(memory::DIRECT_MAP_LIMIT);
        }
    }
    kernel::memmap::free_ranges(
        regions,
        &reserved,
        memory::DIRECT_MAP_LIMIT,
        memory::add_free_range,
    )
    .expect("reserved ranges fit");
    memory::init_heap().expect("no room for the kernel heap");
    // `InitrdMap` maps the initrd's frames whole: it must start on a page
    // and have its last page to itself (else it is copied).
    let initrd = initrd.and_then(|m| {
        let end = m.paddr + m.size;
        let tail = end..page_up(end);
        let tail_shared = reserved
            .iter()
            .filter(|r| r.start != m.paddr)
            .any(|r| r.start < tail.end && tail.start < r.end);
        let placed = memory::place_boot_module(m.paddr, m.size, tail_shared);
        if placed.is_none() {
            log::error!("initrd at {:#x} ({} bytes) cannot be used", m.paddr, m.size);
        }
        placed
    });
    (initrd, above_limit)
}

mod heapless_ranges {
    //! A tiny fixed-capacity vector of ranges for use before the heap exists.
    use core::ops::{Deref, Range};
    use kernel::memmap::MAX_RESERVED;

    #[derive(Default)]
    pub struct Ranges {
        len: usize,
        flat: [Range<u64>; MAX_RESERVED],
    }

    impl Ranges {
        pub fn push(&mut self, r: Range<u64>) {
            assert!(self.len < MAX_RESERVED, "too many reserved ranges");
            self.flat[self.len] = r;
            self.len += 1;
        }
    }

    impl Deref for Ranges {
        type Target = [Range<u64>];
        fn deref(&self) -> &[Range<u64>] {
            &self.flat[..self.len]
        }
    }
}

/// `mode=run`: starts the `init` applications, then this core joins the
/// others in running them; the machine powers off when the last one ends,
/// or with `split` (`console=split`) when the first one (the init
/// environment) ends.
fn run_demo(init: &[alloc::string::String], split: bool, stdin_console: bool) -> ! {
    kprintln!("exo: {} cores online; starting {:?}", percpu::online_cpus(), init);
    env::power_off_when_all_done("exo: all environments have ended; powering off");
    for (i, word) in init.iter().enumerate() {
        // `name[:arg][@core]`: a decimal or 0x-hex start argument, a core.
        let (word_core, core) = match word.split_once('@') {
            Some((w, c)) => (w, c.parse::<usize>().ok().map(Some)),
            None => (word.as_str(), Some(None)),
        };
        let (name, arg) = word_core.split_once(':').unwrap_or((word_core, "0"));
        let arg = match arg.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => arg.parse().ok(),
        };
        let (Some(arg), Some(core)) = (arg, core) else {
            kprintln!("exo: bad start argument or core in {word:?}");
            env::note_run_failure();
            continue;
        };
        let init = split && i == 0;
        if init {
            env::expect_init();
        }
        let spawned = sched::spawn(name, arg, core);
        if let (Ok(env), true) = (&spawned, stdin_console && i == 0) {
            // `stdin=console`: the first application reads the console.
            env::terminal::give_at_boot(env);
        }
        match spawned {
            Ok(env) if init => env::power_off_when_ends(&env),
            Ok(_) => {}
            Err(e) => {
                if init {
                    env::init_not_started();
                }
                kprintln!("exo: cannot start {name}: {e}");
                if let env::SpawnError::NotFound = e {
                    // Most often a typo in `init=`: say what could have been meant.
                    kprintln!("exo: apps in the initrd: {}", initrd_apps());
                }
                env::note_run_failure();
            }
        }
    }
    env::check_all_done();
    super::sched::idle_loop()
}

/// The names of the apps in the initrd, space-separated (`README` left
/// out), or `(no initrd)`.
fn initrd_apps() -> alloc::string::String {
    let Some(initrd) = env::initrd() else {
        return "(no initrd)".into();
    };
    let names: alloc::vec::Vec<&str> = kernel::initrd::files(initrd)
        .map_while(Result::ok)
        .map(|f| f.name)
        .filter(|&n| n != "README")
        .collect();
    names.join(" ")
}

#[inline(never)]
fn panic_test_outer() -> ! {
    panic_test_inner(core::hint::black_box(42))
}

#[inline(never)]
fn panic_test_inner(value: u32) -> ! {
    panic!("deliberate panic for the panic-path test (value {value})")
}
