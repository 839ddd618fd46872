//go:build !unix

package redis

import "net"

// rawWriter is unavailable here: every write goes through the drainer.
type rawWriter struct{}

func newRawWriter(net.Conn) *rawWriter { return nil }

func (*rawWriter) writeNow([]byte) (int, error) { return 0, nil }
