//go:build !linux

package netserve

import "net"

// parker is Linux only; elsewhere idle connections keep their goroutine.
type parker struct{}

func (a *Acceptor) park(net.Conn, func(net.Conn) bool) bool { return false }

func (a *Acceptor) wake(net.Conn) {}

func (a *Acceptor) stopParker() {}
