package store

// ListenCount is how many times s's listener has established LISTEN.
func ListenCount(s *Store) int64 { return s.listens.Load() }
