package compat

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// compatDir is where the client scripts live.
func compatDir(parts ...string) string {
	return filepath.Join(append([]string{root, "test", "compat"}, parts...)...)
}

// runScript runs a client script with the demo's settings in its
// environment and reads its report.
func runScript(ctx context.Context, t *testing.T, env map[string]string, extraEnv []string, argv ...string) report {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = compatDir()
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, extraEnv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	runErr := cmd.Run()
	if ctx.Err() != nil {
		runErr = fmt.Errorf("killed after %v: %w", clientTimeout, runErr)
	}
	r, err := parseReport(stdout.Bytes())
	r.runErr, r.stderr = runErr, stderr.String()
	if err != nil {
		t.Fatalf("%v: %v (exit: %v); stderr:\n%s", argv, err, runErr, stderr.String())
	}
	return r
}

// debianPython is Debian's interpreter, the one that sees the python3-*
// packages (a pyenv python3 earlier on PATH would not).
const debianPython = "/usr/bin/python3"

// pythonClient runs python/<script> with Debian's python3, skipping when
// module (from Debian package pkg) is not importable.
func pythonClient(module, pkg, script string) func(context.Context, *testing.T, map[string]string) report {
	return func(ctx context.Context, t *testing.T, env map[string]string) report {
		if _, err := os.Stat(debianPython); err != nil {
			t.Skipf("%s not found: install the Debian package %s (`.ci/deps test` does, as root)", debianPython, pkg)
		}
		if out, err := commandOutput(ctx, nil, "", debianPython, "-c", "import "+module); err != nil {
			t.Skipf("%s cannot import %s: install the Debian package %s (`.ci/deps test` does, as root): %s", debianPython, module, pkg, out)
		}
		// No __pycache__ in the repository.
		return runScript(ctx, t, env, []string{"PYTHONDONTWRITEBYTECODE=1"}, debianPython, filepath.Join(compatDir("python"), script))
	}
}

// jdbcJar is where Debian's libpostgresql-jdbc-java puts the driver.
const jdbcJar = "/usr/share/java/postgresql.jar"

// javaClient compiles java/*.java with javac against Debian's JDBC jar and
// runs class main.
func javaClient(main string) func(context.Context, *testing.T, map[string]string) report {
	return func(ctx context.Context, t *testing.T, env map[string]string) report {
		javac := lookPath(t, "javac", "default-jdk-headless")
		java := lookPath(t, "java", "default-jdk-headless")
		if _, err := os.Stat(jdbcJar); err != nil {
			t.Skipf("%s not found: install the Debian package libpostgresql-jdbc-java (`.ci/deps test` does, as root)", jdbcJar)
		}
		classes := t.TempDir()
		sources, err := filepath.Glob(compatDir("java", "*.java"))
		if err != nil || len(sources) == 0 {
			t.Fatalf("no Java sources in %s (%v)", compatDir("java"), err)
		}
		args := append([]string{"-cp", jdbcJar, "-d", classes}, sources...)
		if out, err := commandOutput(ctx, nil, "", javac, args...); err != nil {
			t.Fatalf("javac: %v\n%s", err, out)
		}
		return runScript(ctx, t, env, nil, java, "-cp", classes+string(os.PathListSeparator)+jdbcJar, main)
	}
}

var (
	npmOnce    sync.Once
	nodeModule string // the node_modules directory the npm packages were installed in
	npmErr     error
)

// nodeClient runs node/<script> with the npm packages of
// node/package-lock.json, which it installs (once, with npm ci) into a
// directory of the user's cache named by the lock file's hash, so the
// repository never holds node_modules and a second run installs nothing.
func nodeClient(script string) func(context.Context, *testing.T, map[string]string) report {
	return func(ctx context.Context, t *testing.T, env map[string]string) report {
		node := lookPath(t, "node", "nodejs")
		npm := lookPath(t, "npm", "npm")
		npmOnce.Do(func() { nodeModule, npmErr = npmInstall(ctx, npm) })
		if npmErr != nil {
			t.Skipf("the npm packages of test/compat/node/package.json (pg, pg-copy-streams, ioredis) could not be installed: %v", npmErr)
		}
		return runScript(ctx, t, env, []string{"NODE_PATH=" + nodeModule}, node, filepath.Join(compatDir("node"), script))
	}
}

// npmInstall installs node/package-lock.json into the cache and returns
// its node_modules directory.
func npmInstall(ctx context.Context, npm string) (string, error) {
	lock, err := os.ReadFile(compatDir("node", "package-lock.json"))
	if err != nil {
		return "", err
	}
	manifest, err := os.ReadFile(compatDir("node", "package.json"))
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(append(manifest, lock...))
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "tenantguard", "compat-node-"+hex.EncodeToString(sum[:8]))
	modules := filepath.Join(dir, "node_modules")
	if _, err := os.Stat(modules); err == nil {
		return modules, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	// Install beside the final place, then rename: a run cut short leaves
	// no half-installed directory that a later run would trust.
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".compat-node-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	for name, b := range map[string][]byte{"package.json": manifest, "package-lock.json": lock} {
		if err := os.WriteFile(filepath.Join(tmp, name), b, 0o644); err != nil {
			return "", err
		}
	}
	cmd := exec.CommandContext(ctx, npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = tmp
	cmd.WaitDelay = 5 * time.Second // npm's children may hold the pipe after a kill
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm ci: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, dir); err != nil && !os.IsExist(err) {
		if _, statErr := os.Stat(modules); statErr != nil {
			return "", err
		}
	}
	return modules, nil
}
