package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/tenantguard/tenantguard/policy/policypb"
)

// DefaultReportInterval is how often a Reporter reports when nothing
// happens.
const DefaultReportInterval = time.Second

// ReporterOptions configure a Reporter.
type ReporterOptions struct {
	// ServerAddr, NodeID, Token, Backoff and DialOptions are as for Client:
	// the report stream goes to the same control plane, under the same
	// node id and token.
	ServerAddr, NodeID, Token string
	Backoff                   Backoff
	DialOptions               []grpc.DialOption
	// Credentials are as for Client: nil dials in plaintext.
	Credentials credentials.TransportCredentials
	// Interval is how often the load is reported besides right after
	// shares are applied; 0 means DefaultReportInterval.
	Interval time.Duration
	// Load returns what the data plane holds of each budgeted cluster.
	Load func() []*policypb.ClusterLoad
	// Apply installs shares the control plane granted; it must not block
	// long. The next report (sent right after) acknowledges them.
	Apply func(*policypb.Shares)
	// Logger receives the reporter's logs; nil discards them.
	Logger *slog.Logger
}

// Reporter keeps a data plane's connection-budget shares: it streams its
// load to the control plane's Budget service and applies the shares it
// gets back. While the control plane is unreachable the last shares stay
// in force (Apply is simply not called), and it reconnects with backoff.
type Reporter struct {
	opts  ReporterOptions
	log   *slog.Logger
	leave chan struct{}
	once  sync.Once
	left  chan struct{}
	// applied is the seq of the last Shares applied (LoadReport.applied_seq).
	applied atomic.Uint64
}

// NewReporter returns a Reporter; Run starts it.
func NewReporter(opts ReporterOptions) *Reporter {
	if opts.Interval <= 0 {
		opts.Interval = DefaultReportInterval
	}
	if opts.Backoff.Initial <= 0 {
		opts.Backoff.Initial = DefaultBackoffInitial
	}
	if opts.Backoff.Max <= 0 {
		opts.Backoff.Max = DefaultBackoffMax
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reporter{opts: opts, log: log.With("node", opts.NodeID), leave: make(chan struct{}), left: make(chan struct{})}
}

// Run reports until ctx ends or Leave, reconnecting whenever the stream
// breaks.
func (r *Reporter) Run(ctx context.Context) error {
	if r.opts.Load == nil || r.opts.Apply == nil || r.opts.ServerAddr == "" || r.opts.NodeID == "" {
		return errors.New("xdsclient: reporter needs ServerAddr, NodeID, Load and Apply")
	}
	defer r.once.Do(func() { close(r.left) })
	dial := (&Client{opts: Options{Backoff: r.opts.Backoff, Token: r.opts.Token, Credentials: r.opts.Credentials, DialOptions: r.opts.DialOptions}}).dialOptions()
	conn, err := grpc.NewClient(r.opts.ServerAddr, dial...)
	if err != nil {
		return fmt.Errorf("xdsclient: %s: %w", r.opts.ServerAddr, err)
	}
	defer conn.Close()
	bo := newBackoff(r.opts.Backoff)
	for {
		worked, left, err := r.session(ctx, conn)
		if left || ctx.Err() != nil {
			return nil
		}
		if worked {
			bo.reset()
		}
		wait := bo.next()
		r.log.Debug("budget: report stream broke; keeping the shares in force", "error", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-r.leave:
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Leave sends a last report saying the data plane is going (its pools are
// closed), so that its shares go to others at once, and stops Run. It
// waits until Run has stopped or ctx ends.
func (r *Reporter) Leave(ctx context.Context) {
	select {
	case <-r.leave:
	default:
		close(r.leave)
	}
	select {
	case <-r.left:
	case <-ctx.Done():
	}
}

// session runs one report stream. worked says the control plane answered
// on it; left that Leave was served.
func (r *Reporter) session(ctx context.Context, cc grpc.ClientConnInterface) (worked, left bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := policypb.OpenBudgetReport(ctx, cc, grpc.WaitForReady(true))
	if err != nil {
		return false, false, err
	}
	send := func(leaving bool) error {
		// The seq is read before the load: everything it acknowledges is
		// in force (or replaced) in what Load reads.
		seq := r.applied.Load()
		rep := &policypb.LoadReport{NodeId: r.opts.NodeID, AppliedSeq: seq, Clusters: r.opts.Load(), Leaving: leaving}
		return stream.Send(rep)
	}
	if err := send(false); err != nil {
		return false, false, err
	}
	applied := make(chan struct{}, 1)
	recvErr := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // owned by this session: it ends when ctx is cancelled
		defer wg.Done()
		for {
			sh, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			r.opts.Apply(sh)
			r.applied.Store(sh.GetSeq())
			select {
			case applied <- struct{}{}:
			default:
			}
		}
	}()
	defer wg.Wait()
	defer cancel()
	t := time.NewTicker(r.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return worked, false, ctx.Err()
		case err := <-recvErr:
			return worked, false, err
		case <-r.leave:
			err := send(true)
			if err == nil {
				err = stream.CloseSend()
			}
			if err == nil {
				// The control plane ends the stream once it has read the
				// last report; a cancel before that could lose it.
				select {
				case <-recvErr:
				case <-ctx.Done():
				case <-time.After(2 * time.Second):
				}
			}
			return worked, true, err
		case <-applied:
			worked = true
		case <-t.C:
		}
		if err := send(false); err != nil {
			return worked, false, err
		}
	}
}
