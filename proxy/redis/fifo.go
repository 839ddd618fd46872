package redis

// fifo is a first-in first-out queue in a ring that grows as needed and
// keeps its array when emptied, so a steady stream of pushes and pops does
// not allocate. Popped slots are zeroed (they may hold pointers). A ring
// that grew past maxIdleFIFO is let go once empty. Not safe for
// concurrent use.
type fifo[T any] struct {
	buf  []T // len(buf) is a power of two, or 0
	head int
	n    int
}

const maxIdleFIFO = 1024

func (q *fifo[T]) len() int { return q.n }

// push appends v at the back.
func (q *fifo[T]) push(v T) {
	if q.n == len(q.buf) {
		q.grow()
	}
	q.buf[(q.head+q.n)&(len(q.buf)-1)] = v
	q.n++
}

func (q *fifo[T]) grow() {
	nb := make([]T, max(8, 2*len(q.buf)))
	for i := 0; i < q.n; i++ {
		nb[i] = q.buf[(q.head+i)&(len(q.buf)-1)]
	}
	q.buf, q.head = nb, 0
}

// front returns a pointer to the element at the front; the queue must not
// be empty.
func (q *fifo[T]) front() *T { return &q.buf[q.head] }

// at returns a pointer to the i-th element from the front.
func (q *fifo[T]) at(i int) *T { return &q.buf[(q.head+i)&(len(q.buf)-1)] }

// pop removes the element at the front; the queue must not be empty.
func (q *fifo[T]) pop() {
	var zero T
	q.buf[q.head] = zero
	q.head = (q.head + 1) & (len(q.buf) - 1)
	q.n--
	if q.n == 0 {
		q.head = 0
		if len(q.buf) > maxIdleFIFO {
			q.buf = nil
		}
	}
}

// popBack removes the element at the back; the queue must not be empty.
func (q *fifo[T]) popBack() {
	var zero T
	q.n--
	q.buf[(q.head+q.n)&(len(q.buf)-1)] = zero
}

// clear empties the queue, letting go of its array.
func (q *fifo[T]) clear() { *q = fifo[T]{} }
