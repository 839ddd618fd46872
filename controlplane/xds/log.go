package xds

import (
	"context"
	"fmt"
	"log/slog"
)

// cpLogger adapts slog to go-control-plane's log.Logger. go-control-plane
// logs every watch it opens at Info, once per stream and type: at fleet
// scale that is noise, so its Info goes to Debug.
type cpLogger struct{ log *slog.Logger }

func (l cpLogger) Debugf(format string, args ...any) { l.logf(slog.LevelDebug, format, args) }
func (l cpLogger) Infof(format string, args ...any)  { l.logf(slog.LevelDebug, format, args) }
func (l cpLogger) Warnf(format string, args ...any)  { l.logf(slog.LevelWarn, format, args) }
func (l cpLogger) Errorf(format string, args ...any) { l.logf(slog.LevelError, format, args) }

func (l cpLogger) logf(level slog.Level, format string, args []any) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	l.log.Log(context.Background(), level, "go-control-plane: "+fmt.Sprintf(format, args...))
}
