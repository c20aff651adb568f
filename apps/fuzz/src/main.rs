//! placeholder

#![cfg_attr(target_os = "none", no_std, no_main)]

libos_async::entry!(app_main);

fn app_main(_arg: u64) -> i32 {
    0
}
