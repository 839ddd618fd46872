// Package rawio holds read(2), write(2) and a zero-timeout epoll_wait(2)
// made as raw system calls, for sockets that never block.
//
// A goroutine in an ordinary system call (syscall.Read, net.Conn.Write)
// tells the scheduler first: if the call is still running at sysmon's next
// tick (20µs), its processor is handed to another thread. A write to a
// loopback socket runs the peer's whole TCP receive path and wakes it, and
// often takes that long; under load nearly every tick found a processor to
// retake, so sysmon never backed off from its 20µs period, each hand-off
// woke a thread, and the writer came back to find its processor gone. In
// perf profiles of the sidecar under redis-benchmark and pgbench, sysmon's
// own nanosleep was 7.5-7.8% of the samples.
//
// A call on a non-blocking descriptor never waits, so it can be made
// without telling the scheduler, like any other short computation. Use
// these only through syscall.RawConn's Read and Write (or on descriptors
// the caller owns), which keep the descriptor open during the call and
// wait for readiness through the netpoller when the call reports EAGAIN.
package rawio
