package compat

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
