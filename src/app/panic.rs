//! A panic hook for the one panic pingora uses to report a listener it could not build.

/// pingora builds each listener in a task of its own and, when the address stays taken,
/// panics there after 30 s of retries while the process keeps running without it. Such a
/// panic ends the process instead, with the error that names the address.
pub(super) fn exit_when_a_listener_fails() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("Failed to build listeners") {
            tracing::error!("cannot listen: {message}; exiting");
            std::process::exit(1);
        }
        default(info);
    }));
}
