import type { logger } from '../log.js';

/**
 * What podvisord does with an exception nothing caught. Every path a guest or
 * tenant drives is meant to catch its own errors (a guest's bad frame closes
 * that guest's channel), so reaching here is a podvisor bug: state in memory
 * may be half-updated, so the daemon logs it and exits, and its supervisor
 * restarts it (pods keep running; recovery picks them up). A rejected promise
 * nobody awaited is logged and counted, not fatal: it has already unwound.
 */
export function installExceptionPolicy(log: ReturnType<typeof logger>): void {
  let unhandled = 0;
  process.on('unhandledRejection', (reason) => {
    unhandled++;
    log.error({ err: reason instanceof Error ? (reason.stack ?? reason.message) : String(reason), count: unhandled }, 'unhandled promise rejection (a podvisor bug); continuing');
  });
  process.on('uncaughtException', (err) => {
    log.fatal({ err: err.stack ?? err.message }, 'uncaught exception (a podvisor bug); exiting so a supervisor restarts podvisord');
    process.exitCode = 70; // EX_SOFTWARE
    setTimeout(() => process.exit(70), 100).unref();
  });
}
