package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The load generator talks HTTP/2 itself, as Envoy's gRPC client does: one
// long-lived connection per Envoy worker, many concurrent streams on it,
// all driven by one event loop per connection (here one goroutine, Envoy's
// worker thread there). It costs the machine a few µs per Check, so nearly
// all the CPU the two cores have goes to the service under test, and its
// latencies are those a proxy with an event loop would see: no goroutine
// per call, no per-call allocation.

// Envoy's HTTP/2 defaults (http2_protocol_options): 256 MiB windows for
// the stream and the connection, so the service's responses never wait for
// a WINDOW_UPDATE.
const (
	envoyWindow    = 256 << 20
	checkPath      = "/envoy.service.auth.v3.Authorization/Check"
	defaultWindow  = 65535
	defaultMaxRead = 16384
)

// h2conn is one HTTP/2 connection to the service. It is used by one
// goroutine at a time: run drives all its streams and returns when they
// are done; the connection stays open for the next run.
type h2conn struct {
	nc   net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	fr   *http2.Framer
	henc *hpack.Encoder
	hbuf []byte
	hdec *hpack.Decoder
	// timeout is the grpc-timeout header of every request.
	timeout string

	nextID        uint32
	sendWindow    int64 // connection-level send window
	initialWindow int64 // peer's SETTINGS_INITIAL_WINDOW_SIZE
	maxFrame      int   // peer's SETTINGS_MAX_FRAME_SIZE
	recvUnacked   int64 // DATA bytes received since our last connection WINDOW_UPDATE

	active  map[uint32]*h2stream
	blocked []*h2stream // waiting for send window, in order
	// header decoding state: the stream whose header block is being read
	hdrStream *h2stream
	hdrEnd    bool
}

// h2stream is one closed-loop caller: it sends a Check, waits for the
// answer, and sends the next.
type h2stream struct {
	idx    int    // the stream's index on its connection, for runPlan.next
	id     uint32 // current HTTP/2 stream id
	window int64
	req    encodedRequest
	sent   int // bytes of req.msg sent
	start  time.Time
	resp   []byte
	status string // :status
	grpc   string // grpc-status
	gmsg   string // grpc-message
	reset  bool   // ended by RST_STREAM
}

// dialH2 connects and exchanges the connection prefaces with Envoy's
// window sizes.
func dialH2(addr, timeout string) (*h2conn, error) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &h2conn{
		nc: nc, br: bufio.NewReaderSize(nc, 64<<10), bw: bufio.NewWriterSize(nc, 64<<10),
		nextID: 1, sendWindow: defaultWindow, initialWindow: defaultWindow, maxFrame: defaultMaxRead,
		active: map[uint32]*h2stream{}, timeout: timeout,
	}
	c.fr = http2.NewFramer(c.bw, c.br)
	c.henc = hpack.NewEncoder(headerSink{c})
	c.hdec = hpack.NewDecoder(4096, c.emit)
	if _, err := c.bw.WriteString(http2.ClientPreface); err != nil {
		nc.Close()
		return nil, err
	}
	err = errors.Join(
		c.fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: envoyWindow}),
		c.fr.WriteWindowUpdate(0, envoyWindow-defaultWindow),
		c.bw.Flush())
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

func (c *h2conn) Close() error { return c.nc.Close() }

// headerSink collects the hpack encoder's output.
type headerSink struct{ c *h2conn }

func (s headerSink) Write(p []byte) (int, error) {
	s.c.hbuf = append(s.c.hbuf, p...)
	return len(p), nil
}

// emit receives decoded response header fields.
func (c *h2conn) emit(f hpack.HeaderField) {
	st := c.hdrStream
	if st == nil {
		return
	}
	switch f.Name {
	case ":status":
		st.status = f.Value
	case "grpc-status":
		st.grpc = f.Value
	case "grpc-message":
		st.gmsg = f.Value
	}
}

// runPlan says what the streams of one run send.
type runPlan struct {
	// next returns the request a stream sends next, or false when the run
	// is over for that stream. stream is the stream's index on this
	// connection.
	next func(stream int) (encodedRequest, bool)
	lat  []time.Duration // appended to: one latency per answered Check
	reqs *atomic.Uint64  // request ids, shared by all connections
	// timeouts counts Checks that ended past their deadline (grpc-status
	// DEADLINE_EXCEEDED or CANCELLED, or the stream reset), as Envoy's
	// filter would see them; they are not errors of the run.
	timeouts int
}

// run drives n concurrent streams until plan.next says stop for each and
// their last answers are in. It returns the latencies.
func (c *h2conn) run(n int, plan *runPlan) ([]time.Duration, error) {
	idle := 0
	startNext := func(s *h2stream) error {
		req, ok := plan.next(s.idx)
		if !ok {
			idle++
			return nil
		}
		return c.start(s, req, plan.reqs.Add(1))
	}
	for i := range n {
		if err := startNext(&h2stream{idx: i, resp: make([]byte, 0, 1024)}); err != nil {
			return plan.lat, err
		}
	}
	for idle < n {
		if c.br.Buffered() == 0 {
			if err := c.bw.Flush(); err != nil {
				return plan.lat, err
			}
		}
		done, err := c.step()
		if err != nil {
			return plan.lat, err
		}
		if done == nil {
			continue
		}
		plan.lat = append(plan.lat, time.Since(done.start))
		if done.timedOut() {
			plan.timeouts++
		} else if err := done.check(); err != nil {
			return plan.lat, err
		}
		if err := startNext(done); err != nil {
			return plan.lat, err
		}
	}
	return plan.lat, c.bw.Flush()
}

// timedOut reports whether the Check ended for its deadline: the service
// gave up (DEADLINE_EXCEEDED, CANCELLED) or reset the stream.
func (s *h2stream) timedOut() bool { return s.reset || s.grpc == "4" || s.grpc == "1" }

// check reports an error unless the answer was an allowed request.
func (s *h2stream) check() error {
	if s.status != "200" || s.grpc != "0" {
		return fmt.Errorf("Check answered :status %q grpc-status %q grpc-message %q", s.status, s.grpc, s.gmsg)
	}
	if len(s.resp) < 5 || int(binary.BigEndian.Uint32(s.resp[1:5])) != len(s.resp)-5 {
		return fmt.Errorf("Check answered a malformed gRPC message of %d bytes", len(s.resp))
	}
	if ok, body := checkResponseOK(s.resp[5:]); !ok {
		return fmt.Errorf("Check denied the request: %s", body)
	}
	return nil
}

// start opens a new HTTP/2 stream for req on s: HEADERS as Envoy's gRPC
// client sends them (with the 200 ms timeout of the ext_authz filter's
// default), then as much of the body as the windows allow.
func (c *h2conn) start(s *h2stream, req encodedRequest, reqNo uint64) error {
	req.setRequestID(reqNo)
	*s = h2stream{idx: s.idx, id: c.nextID, window: c.initialWindow, req: req, start: time.Now(), resp: s.resp[:0]}
	c.nextID += 2
	c.active[s.id] = s
	c.hbuf = c.hbuf[:0]
	for _, f := range [...]hpack.HeaderField{
		{Name: ":method", Value: "POST"},
		{Name: ":scheme", Value: "http"},
		{Name: ":path", Value: checkPath},
		{Name: ":authority", Value: "ext_authz"},
		{Name: "content-type", Value: "application/grpc"},
		{Name: "te", Value: "trailers"},
		{Name: "grpc-timeout", Value: c.timeout},
	} {
		if err := c.henc.WriteField(f); err != nil {
			return err
		}
	}
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: s.id, BlockFragment: c.hbuf, EndHeaders: true}); err != nil {
		return err
	}
	return c.sendBody(s)
}

// sendBody sends what the windows allow of s's request; a stream that
// could not finish waits in c.blocked.
func (c *h2conn) sendBody(s *h2stream) error {
	for s.sent < len(s.req.msg) {
		n := min(int64(len(s.req.msg)-s.sent), int64(c.maxFrame), c.sendWindow, s.window)
		if n <= 0 {
			c.blocked = append(c.blocked, s)
			return nil
		}
		end := s.sent+int(n) == len(s.req.msg)
		if err := c.fr.WriteData(s.id, end, s.req.msg[s.sent:s.sent+int(n)]); err != nil {
			return err
		}
		s.sent += int(n)
		c.sendWindow -= n
		s.window -= n
	}
	return nil
}

// unblock retries the streams waiting for send window.
func (c *h2conn) unblock() error {
	waiting := c.blocked
	c.blocked = nil
	for _, s := range waiting {
		if c.active[s.id] != s {
			continue
		}
		if err := c.sendBody(s); err != nil {
			return err
		}
	}
	return nil
}

// step reads and handles one frame; it returns the stream whose answer
// this frame completed, if any.
func (c *h2conn) step() (*h2stream, error) {
	f, err := c.fr.ReadFrame()
	if err != nil {
		return nil, fmt.Errorf("read frame: %w", err)
	}
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil, nil
		}
		err := f.ForeachSetting(func(s http2.Setting) error {
			switch s.ID {
			case http2.SettingInitialWindowSize:
				delta := int64(s.Val) - c.initialWindow
				c.initialWindow = int64(s.Val)
				for _, st := range c.active {
					st.window += delta
				}
			case http2.SettingMaxFrameSize:
				c.maxFrame = int(s.Val)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if err := c.fr.WriteSettingsAck(); err != nil {
			return nil, err
		}
		return nil, c.unblock()
	case *http2.WindowUpdateFrame:
		if f.StreamID == 0 {
			c.sendWindow += int64(f.Increment)
		} else if s := c.active[f.StreamID]; s != nil {
			s.window += int64(f.Increment)
		}
		return nil, c.unblock()
	case *http2.PingFrame:
		if f.IsAck() {
			return nil, nil
		}
		return nil, c.fr.WritePing(true, f.Data)
	case *http2.HeadersFrame:
		c.hdrStream, c.hdrEnd = c.active[f.StreamID], f.StreamEnded()
		if _, err := c.hdec.Write(f.HeaderBlockFragment()); err != nil {
			return nil, fmt.Errorf("hpack: %w", err)
		}
		if !f.HeadersEnded() {
			return nil, nil
		}
		return c.headersDone()
	case *http2.ContinuationFrame:
		if _, err := c.hdec.Write(f.HeaderBlockFragment()); err != nil {
			return nil, fmt.Errorf("hpack: %w", err)
		}
		if !f.HeadersEnded() {
			return nil, nil
		}
		return c.headersDone()
	case *http2.DataFrame:
		// Give the window back in big steps, as Envoy does.
		if c.recvUnacked += int64(f.Length); c.recvUnacked > envoyWindow/2 {
			if err := c.fr.WriteWindowUpdate(0, uint32(c.recvUnacked)); err != nil {
				return nil, err
			}
			c.recvUnacked = 0
		}
		s := c.active[f.StreamID]
		if s == nil {
			return nil, nil
		}
		s.resp = append(s.resp, f.Data()...)
		if f.StreamEnded() {
			return nil, fmt.Errorf("stream %d ended without trailers", f.StreamID)
		}
		return nil, nil
	case *http2.RSTStreamFrame:
		s := c.active[f.StreamID]
		if s == nil {
			return nil, nil // its trailers came first
		}
		if f.ErrCode != http2.ErrCodeCancel {
			return nil, fmt.Errorf("stream %d reset: %v", f.StreamID, f.ErrCode)
		}
		delete(c.active, s.id)
		s.reset = true
		return s, nil
	case *http2.GoAwayFrame:
		return nil, fmt.Errorf("GOAWAY %v: %s", f.ErrCode, f.DebugData())
	}
	return nil, nil
}

// headersDone finishes a header block: a block that ends the stream holds
// the trailers (or is a trailers-only answer) and completes the Check.
func (c *h2conn) headersDone() (*h2stream, error) {
	if err := c.hdec.Close(); err != nil {
		return nil, fmt.Errorf("hpack: %w", err)
	}
	s := c.hdrStream
	c.hdrStream = nil
	if s == nil || !c.hdrEnd {
		return nil, nil
	}
	delete(c.active, s.id)
	if s.sent < len(s.req.msg) {
		return nil, fmt.Errorf("stream %d answered before its request was sent: :status %q grpc-status %q %q", s.id, s.status, s.grpc, s.gmsg)
	}
	return s, nil
}
