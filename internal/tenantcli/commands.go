package tenantcli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/tenantguard/tenantguard/controlplane/adminapi"
)

func (c *cli) provision(fs *flag.FlagSet) func(context.Context, []string) int {
	pwFile := fs.String("password-file", "", "file holding the tenant's password (plaintext, hashed by the control plane, or a SCRAM-SHA-256 verifier)")
	limits := fs.String("limits", "", `limits as JSON, e.g. {"max_connections":100,"statement_timeout":"30s"}`)
	seed := fs.String("seed", "", `seed file (JSON): {"rows":{"public.orders":[{"item":"x"}]},"keys":{"greeting":"hello"}}`)
	ready := fs.String("ready-timeout", "", "how long to wait for the sidecars to accept the tenant (default the control plane's)")
	return func(ctx context.Context, args []string) int {
		if len(args) != 1 {
			return c.usage("provision takes one tenant id")
		}
		if *pwFile == "" {
			return c.usage("provision needs --password-file")
		}
		pw, err := os.ReadFile(*pwFile)
		if err != nil {
			return c.fail(err)
		}
		body := map[string]any{"credentials": []string{strings.TrimRight(string(pw), "\r\n")}}
		if *limits != "" {
			if !json.Valid([]byte(*limits)) {
				return c.usage("--limits is not JSON")
			}
			body["limits"] = json.RawMessage(*limits)
		}
		if *seed != "" {
			b, err := os.ReadFile(*seed)
			if err != nil {
				return c.fail(err)
			}
			if !json.Valid(b) {
				return c.usage("%s is not JSON", *seed)
			}
			body["seed"] = json.RawMessage(b)
		}
		if *ready != "" {
			body["ready_timeout"] = *ready
		}
		b, _ := json.Marshal(body)
		_, code := c.start(ctx, args[0], "provision", "", bytes.NewReader(b))
		return code
	}
}

func (c *cli) export(fs *flag.FlagSet) func(context.Context, []string) int {
	out := fs.String("o", "", "where to write the archive (default <tenant>-<operation>.tar; - for stdout)")
	return func(ctx context.Context, args []string) int {
		if len(args) != 1 {
			return c.usage("export takes one tenant id")
		}
		op, code := c.start(ctx, args[0], "export", "", strings.NewReader("{}"))
		if code != 0 || c.noWait {
			return code
		}
		return c.save(ctx, op, *out)
	}
}

// save downloads op's archive to path (default <tenant>-<op>.tar).
func (c *cli) save(ctx context.Context, op adminapi.OperationView, path string) int {
	if path == "" {
		path = op.Tenant + "-" + op.ID + ".tar"
	}
	if err := c.download(ctx, op.ID, path); err != nil {
		return c.fail(err)
	}
	return 0
}

func (c *cli) importCmd(fs *flag.FlagSet) func(context.Context, []string) int {
	archive := fs.String("archive", "", "archive file to upload and load")
	from := fs.String("from-operation", "", "load the archive an earlier operation (export, offboard --export) left on the control plane")
	return func(ctx context.Context, args []string) int {
		if len(args) != 1 {
			return c.usage("import takes one tenant id")
		}
		switch {
		case (*archive == "") == (*from == ""):
			return c.usage("import needs one of --archive FILE and --from-operation OP")
		case *archive != "":
			f, err := os.Open(*archive)
			if err != nil {
				return c.fail(err)
			}
			defer f.Close()
			_, code := c.start(ctx, args[0], "import", "application/x-tar", f)
			return code
		}
		b, _ := json.Marshal(map[string]string{"archive": *from})
		_, code := c.start(ctx, args[0], "import", "", bytes.NewReader(b))
		return code
	}
}

func (c *cli) offboard(fs *flag.FlagSet) func(context.Context, []string) int {
	yes := fs.Bool("yes", false, "confirm: every row and key of the tenant is deleted")
	export := fs.Bool("export", false, "export the tenant's data first, and download the archive")
	out := fs.String("o", "", "with --export: where to write the archive")
	batch := fs.Int("batch-size", 0, "rows per DELETE (default 1000)")
	pause := fs.String("batch-pause", "", "pause between batches, e.g. 10ms")
	return func(ctx context.Context, args []string) int {
		if len(args) != 1 {
			return c.usage("offboard takes one tenant id")
		}
		if !*yes {
			return c.usage("offboard deletes every row and key of tenant %s and removes it from the policy: add --yes", args[0])
		}
		body := map[string]any{"export": *export}
		if *batch > 0 {
			body["batch_size"] = *batch
		}
		if *pause != "" {
			body["batch_pause"] = *pause
		}
		b, _ := json.Marshal(body)
		op, code := c.start(ctx, args[0], "offboard", "", bytes.NewReader(b))
		if code == 0 && !c.noWait {
			c.printDeleted(op)
			if *export {
				return c.save(ctx, op, *out)
			}
		}
		return code
	}
}

// printDeleted prints what an offboarding deleted.
func (c *cli) printDeleted(op adminapi.OperationView) {
	var r struct {
		Deleted *struct {
			Rows map[string]int64 `json:"rows"`
			Keys int64            `json:"keys"`
		} `json:"deleted"`
	}
	if json.Unmarshal(op.Result, &r) != nil || r.Deleted == nil {
		return
	}
	tw := tabwriter.NewWriter(c.env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "deleted\tcount")
	for _, t := range sortedKeys(r.Deleted.Rows) {
		fmt.Fprintf(tw, "%s\t%d rows\n", t, r.Deleted.Rows[t])
	}
	fmt.Fprintf(tw, "redis\t%d keys\n", r.Deleted.Keys)
	_ = tw.Flush()
}

func (c *cli) status(fs *flag.FlagSet) func(context.Context, []string) int {
	return func(ctx context.Context, args []string) int {
		if len(args) != 1 {
			return c.usage("status takes one operation id")
		}
		var op adminapi.OperationView
		if err := c.call(ctx, "GET", "/v1/operations/"+url.PathEscape(args[0]), "", nil, &op); err != nil {
			return c.fail(err)
		}
		c.printJSON(op)
		return 0
	}
}

func (c *cli) list(fs *flag.FlagSet) func(context.Context, []string) int {
	tenant := fs.String("tenant", "", "only this tenant's operations")
	active := fs.Bool("active", false, "only operations still running")
	return func(ctx context.Context, args []string) int {
		if len(args) != 0 {
			return c.usage("list takes no arguments")
		}
		q := url.Values{}
		if *tenant != "" {
			q.Set("tenant", *tenant)
		}
		if *active {
			q.Set("active", "true")
		}
		var out struct {
			Operations []adminapi.OperationView `json:"operations"`
		}
		if err := c.call(ctx, "GET", "/v1/operations?"+q.Encode(), "", nil, &out); err != nil {
			return c.fail(err)
		}
		tw := tabwriter.NewWriter(c.env.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tKIND\tTENANT\tSTATE\tPROGRESS\tCREATED\tERROR")
		for _, op := range out.Operations {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d%%\t%s\t%s\n", op.ID, op.Kind, op.Tenant, op.State, op.Percent,
				op.CreatedAt.Format("2006-01-02 15:04:05"), op.Error)
		}
		_ = tw.Flush()
		return 0
	}
}

func (c *cli) cancel(fs *flag.FlagSet) func(context.Context, []string) int {
	return func(ctx context.Context, args []string) int {
		if len(args) != 1 {
			return c.usage("cancel takes one operation id")
		}
		var op adminapi.OperationView
		if err := c.call(ctx, "POST", "/v1/operations/"+url.PathEscape(args[0])+"/cancel", "", nil, &op); err != nil {
			return c.fail(err)
		}
		if c.noWait {
			c.printJSON(op)
			return 0
		}
		op, code := c.follow(ctx, op.ID)
		if op.State == "cancelled" {
			return 0
		}
		return code
	}
}

func (c *cli) archive(fs *flag.FlagSet) func(context.Context, []string) int {
	out := fs.String("o", "", "where to write the archive (- for stdout)")
	return func(ctx context.Context, args []string) int {
		if len(args) != 1 || *out == "" {
			return c.usage("archive takes one operation id and -o FILE")
		}
		if err := c.download(ctx, args[0], *out); err != nil {
			return c.fail(err)
		}
		return 0
	}
}

func (c *cli) move(fs *flag.FlagSet) func(context.Context, []string) int {
	to := fs.String("to", "", "the PostgreSQL cluster of the policy to move the tenant to")
	catchup := fs.String("catchup-timeout", "", "how long the tenant may stay paused waiting for the target to catch up before the move is undone (default 30s)")
	batch := fs.Int("batch-size", 0, "rows per DELETE at the source after the switch (default 1000)")
	return func(ctx context.Context, args []string) int {
		if len(args) != 1 {
			return c.usage("move takes one tenant id")
		}
		if *to == "" {
			return c.usage("move needs --to CLUSTER")
		}
		body := map[string]any{"postgres": *to}
		if *catchup != "" {
			body["catchup_timeout"] = *catchup
		}
		if *batch > 0 {
			body["batch_size"] = *batch
		}
		b, _ := json.Marshal(body)
		op, code := c.start(ctx, args[0], "move", "", bytes.NewReader(b))
		if code == 0 && !c.noWait {
			c.printMoved(op)
		}
		return code
	}
}

// printMoved prints what a move did: rows copied and the pause.
func (c *cli) printMoved(op adminapi.OperationView) {
	var r struct {
		Clusters struct{ From, To string } `json:"clusters"`
		Copy     struct {
			Rows          int64 `json:"rows"`
			RowsPerSecond int64 `json:"rows_per_second"`
		} `json:"copy"`
		PauseMS *int64 `json:"pause_ms"`
	}
	if json.Unmarshal(op.Result, &r) != nil || r.PauseMS == nil {
		return
	}
	fmt.Fprintf(c.env.Stdout, "moved %s from %s to %s: %d rows copied (%d rows/s), paused %d ms\n",
		op.Tenant, r.Clusters.From, r.Clusters.To, r.Copy.Rows, r.Copy.RowsPerSecond, *r.PauseMS)
}
