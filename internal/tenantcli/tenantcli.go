// Package tenantcli is `tenantguard tenant …`: it starts tenant lifecycle
// operations through the control plane's admin API, follows them to their
// end (a progress bar on a terminal, one plain line per change
// otherwise), and downloads and uploads archives.
package tenantcli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/tenantguard/tenantguard/controlplane/adminapi"
)

// Usage is the command's help.
const Usage = `usage: tenantguard tenant <command> [flags]

commands:
  provision ID --password-file FILE [--limits JSON] [--seed FILE] [--ready-timeout 1m]
                          add a tenant (credentials, limits), load its seed rows and keys, and
                          wait until every connected sidecar has accepted it
  export ID [-o FILE]     write the tenant's rows and keys to an archive and download it
  import ID (--archive FILE | --from-operation OP)
                          load an archive into a tenant of the policy without data (the same or a new id:
                          provision a new one first, without --seed)
  offboard ID --yes [--export [-o FILE]] [--batch-size N] [--batch-pause 10ms]
                          suspend, revoke sessions, (export,) delete every row and key, remove from the policy
  move ID --to CLUSTER [--catchup-timeout 30s] [--batch-size N]
                          copy the tenant's rows to another PostgreSQL cluster with logical replication,
                          pause it for the switch, place it there, delete its rows at the old cluster
  status OP               show an operation
  list [--tenant ID] [--active]
                          list operations, newest first
  cancel OP               cancel an operation (what it did is undone)
  archive OP -o FILE      download the archive an operation wrote

common flags: --api URL (default $TG_ADMIN_API), --token-file FILE (default $TG_ADMIN_TOKEN),
  --author NAME (recorded in the audit trail), --no-wait (print the operation and return)
exit status: 0 when the operation succeeded, 1 when it failed or was cancelled, 2 for usage errors
`

// Env is what the command reads besides its flags.
type Env struct {
	Stdout, Stderr io.Writer
	// Terminal: Stdout is a terminal (a redrawn progress bar instead of
	// lines).
	Terminal bool
	// Width is the terminal's width in columns (0: 80).
	Width  int
	Getenv func(string) string
	// Poll is how often a followed operation is read (default 250ms).
	Poll time.Duration
}

// Run runs `tenantguard tenant args…` and returns the exit code.
func Run(ctx context.Context, args []string, env Env) int {
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	if env.Poll <= 0 {
		env.Poll = 250 * time.Millisecond
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(env.Stdout, Usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c := &cli{env: env}
	cmd, rest := args[0], args[1:]
	fs := flag.NewFlagSet("tenant "+cmd, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	api := fs.String("api", env.Getenv("TG_ADMIN_API"), "control plane admin API base URL")
	tokenFile := fs.String("token-file", "", "file holding the admin bearer token (default $TG_ADMIN_TOKEN)")
	fs.StringVar(&c.author, "author", env.Getenv("USER"), "who the operation is attributed to")
	noWait := fs.Bool("no-wait", false, "print the operation and return without following it")
	var run func(ctx context.Context, args []string) int
	switch cmd {
	case "provision":
		run = c.provision(fs)
	case "export":
		run = c.export(fs)
	case "import":
		run = c.importCmd(fs)
	case "offboard":
		run = c.offboard(fs)
	case "move":
		run = c.move(fs)
	case "status":
		run = c.status(fs)
	case "list":
		run = c.list(fs)
	case "cancel":
		run = c.cancel(fs)
	case "archive":
		run = c.archive(fs)
	default:
		fmt.Fprintf(env.Stderr, "tenantguard tenant: unknown command %q\n\n%s", cmd, Usage)
		return 2
	}
	// Flags may follow the positional argument (tenant provision acme --password-file f).
	pos, err := parseInterspersed(fs, rest)
	if err != nil {
		return 2
	}
	if *api == "" {
		fmt.Fprintln(env.Stderr, "tenantguard tenant: --api or $TG_ADMIN_API is required (the control plane's admin API)")
		return 2
	}
	c.api = strings.TrimRight(*api, "/")
	c.token = env.Getenv("TG_ADMIN_TOKEN")
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			fmt.Fprintln(env.Stderr, "tenantguard tenant:", err)
			return 2
		}
		c.token = strings.TrimSpace(string(b))
	}
	if c.token == "" {
		fmt.Fprintln(env.Stderr, "tenantguard tenant: --token-file or $TG_ADMIN_TOKEN is required")
		return 2
	}
	c.noWait = *noWait
	return run(ctx, pos)
}

// parseInterspersed parses flags wherever they are among the arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

type cli struct {
	env    Env
	api    string
	token  string
	author string
	noWait bool
}

// apiError is an error answer of the admin API.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string { return fmt.Sprintf("%s (%d %s)", e.Message, e.Status, e.Code) }

// call sends a request and decodes a JSON answer into out.
func (c *cli) call(ctx context.Context, method, path, ctype string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.api+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if c.author != "" {
		req.Header.Set("X-Author", c.author)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e)
		return &apiError{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func (c *cli) fail(err error) int {
	fmt.Fprintln(c.env.Stderr, "tenantguard tenant:", err)
	return 1
}

// start posts an operation and follows it (unless --no-wait).
func (c *cli) start(ctx context.Context, tenant, kind, ctype string, body io.Reader) (adminapi.OperationView, int) {
	var op adminapi.OperationView
	if ctype == "" {
		ctype = "application/json"
	}
	if err := c.call(ctx, "POST", "/v1/tenants/"+url.PathEscape(tenant)+"/"+kind, ctype, body, &op); err != nil {
		return op, c.fail(err)
	}
	fmt.Fprintf(c.env.Stderr, "%s %s: operation %s\n", kind, tenant, op.ID)
	if c.noWait {
		c.printJSON(op)
		return op, 0
	}
	return c.follow(ctx, op.ID)
}

func (c *cli) printJSON(v any) {
	b, _ := json.MarshalIndent(v, "", "  ")
	fmt.Fprintln(c.env.Stdout, string(b))
}

// follow reads the operation until it ends, showing its progress.
func (c *cli) follow(ctx context.Context, id string) (adminapi.OperationView, int) {
	p := newProgress(c.env.Stdout, c.env.Terminal, c.env.Width)
	tick := time.NewTicker(c.env.Poll)
	defer tick.Stop()
	failures := 0
	for {
		var op adminapi.OperationView
		err := c.call(ctx, "GET", "/v1/operations/"+url.PathEscape(id), "", nil, &op)
		switch {
		case err == nil:
			failures = 0
			p.show(op)
			switch op.State {
			case "succeeded":
				p.done()
				return op, 0
			case "failed", "cancelled":
				p.done()
				fmt.Fprintf(c.env.Stderr, "operation %s %s: %s\n", op.ID, op.State, op.Error)
				return op, 1
			}
		case ctx.Err() != nil:
			p.done()
			fmt.Fprintf(c.env.Stderr, "stopped following operation %s; it goes on (tenantguard tenant status %s)\n", id, id)
			return op, 1
		default:
			// The control plane may be restarting; the operation goes on.
			if failures++; failures > 40 {
				p.done()
				return op, c.fail(err)
			}
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

// download writes an operation's archive to path ("-": stdout).
func (c *cli) download(ctx context.Context, id, path string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", c.api+"/v1/operations/"+url.PathEscape(id)+"/archive", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &apiError{Status: resp.StatusCode, Code: "no_archive", Message: "operation " + id + " has no archive"}
	}
	if path == "-" {
		_, err = io.Copy(c.env.Stdout, resp.Body)
		return err
	}
	tmp := path + ".partial"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	fmt.Fprintf(c.env.Stderr, "archive written to %s\n", path)
	return nil
}

// errUsage reports a usage error.
func (c *cli) usage(format string, args ...any) int {
	fmt.Fprintf(c.env.Stderr, "tenantguard tenant: "+format+"\n", args...)
	return 2
}
