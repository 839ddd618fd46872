package benchkit

import (
	"fmt"
	"strings"
)

// Pid returns the service's process id.
func (s *Service) Pid() int { return s.cmd.Process.Pid }

// CPUTicks returns the service's CPU time in clock ticks (see CPUTicks).
func (s *Service) CPUTicks() (int64, error) {
	n, err := CPUTicks(s.cmd.Process.Pid)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", s.Name, err)
	}
	return n, nil
}

// RSSKiB returns the service's resident set size in KiB.
func (s *Service) RSSKiB() (int64, error) {
	n, err := RSSKiB(s.cmd.Process.Pid)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", s.Name, err)
	}
	return n, nil
}

// CPUDuring runs f and returns the clock ticks of CPU time s used
// meanwhile; 0 for a nil s (a target without a proxy).
func CPUDuring(s *Service, f func() error) (int64, error) {
	if s == nil {
		return 0, f()
	}
	before, err := s.CPUTicks()
	if err != nil {
		return 0, err
	}
	if err := f(); err != nil {
		return 0, err
	}
	after, err := s.CPUTicks()
	if err != nil {
		return 0, err
	}
	return after - before, nil
}

// RSSNote is the report line with the services' resident set sizes.
func RSSNote(services ...*Service) (string, error) {
	var rss []string
	for _, s := range services {
		kib, err := s.RSSKiB()
		if err != nil {
			return "", err
		}
		rss = append(rss, fmt.Sprintf("%s %.1f MiB", s.Name, float64(kib)/1024))
	}
	return "RSS after the runs: " + strings.Join(rss, ", ") + ".", nil
}
