//go:build !unix

package redis

import "net"

// sock is unavailable here: clients only use net.Conn's methods.
type sock struct{}

func newSock(net.Conn) *sock { return nil }

func (*sock) writeNow([]byte) (int, error) { return 0, nil }

func (*sock) readNow([]byte) (int, error) { return 0, errWouldBlock }

func (*sock) shutdown() bool { return false }

func (*sock) control(func(fd int)) error { return errWouldBlock }

// peekByte reads the first byte of c; the connection returned gives it
// back first.
func peekByte(c net.Conn) (byte, net.Conn, error) { return peekByteByRead(c) }
