package benchkit

import (
	"context"
	"fmt"
	"os/exec"
	"time"
)

// Tool is one run of a load tool (pgbench, redis-benchmark) against a
// target, directly or through a proxy Service.
type Tool struct {
	What    string        // names the run in errors
	Svc     *Service      // the proxy; nil for a direct target
	Timeout time.Duration // longest the run may take
	Hung    string        // the error's text if it takes longer, after "What: hung: "
	// Output is the tool's output as quoted in errors, before the proxy's
	// log tail.
	Output func(out []byte) string
}

// Run runs the command cmd makes with a context that ends after t.Timeout
// and returns its combined output. A non-zero exit, a proxy that died, an
// interruption (ctx done) or a run that hangs is an error.
func (t Tool) Run(ctx context.Context, cmd func(context.Context) *exec.Cmd) ([]byte, error) {
	runCtx, cancel := context.WithTimeout(ctx, t.Timeout)
	defer cancel()
	out, runErr := cmd(runCtx).CombinedOutput()
	if t.Svc != nil {
		if err := t.Svc.Alive(); err != nil {
			return nil, fmt.Errorf("%s: %w", t.What, err)
		}
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("%s: interrupted: %w", t.What, ctx.Err())
	}
	if runCtx.Err() == context.DeadlineExceeded {
		return nil, fmt.Errorf("%s: hung: %s\n%s%s", t.What, t.Hung, t.Output(out), t.Svc.LogTail())
	}
	if runErr != nil {
		return nil, fmt.Errorf("%s: %w\n%s%s", t.What, runErr, t.Output(out), t.Svc.LogTail())
	}
	return out, nil
}
