package wire

import (
	"bytes"
	"fmt"
	"io"
)

// readerBufSize is the initial buffer of a LineReader. It holds every reply
// but stats and most pushes, so an idle connection costs half a kilobyte.
const readerBufSize = 512

// shrinkAbove is the buffer size above which a LineReader gives a grown
// buffer back after the long line is consumed; below it, keeping the buffer
// avoids churn on a stream of long pushes (at most 518 bytes each).
const shrinkAbove = 4 * readerBufSize

// LineReader reads LF-terminated lines with a byte cap and strips one
// trailing "\r". It starts with a small buffer, so an idle connection costs
// little memory, and accumulates longer lines up to the cap (a stats reply
// can be a megabyte). A longer line returns an error matching
// ErrLineTooLong; the reader is unusable afterwards.
type LineReader struct {
	r          io.Reader
	max        int
	buf        []byte
	start, end int   // unread data is buf[start:end]
	err        error // sticky error from r, or the too-long error
}

// NewLineReader returns a LineReader on r whose lines may hold at most max
// bytes (the LF and one trailing CR not counted). max <= 0 means
// DefaultMaxReply.
func NewLineReader(r io.Reader, max int) *LineReader {
	if max <= 0 {
		max = DefaultMaxReply
	}
	return &LineReader{r: r, max: max, buf: make([]byte, readerBufSize)}
}

// ReadLine returns the next line without its LF and one trailing CR. At the
// end of the input it returns io.EOF, or io.ErrUnexpectedEOF when a partial
// line is pending; other read errors are returned as they are.
func (lr *LineReader) ReadLine() (string, error) {
	scanned := 0 // bytes of buf[start:end] known to hold no LF
	for {
		if i := bytes.IndexByte(lr.buf[lr.start+scanned:lr.end], '\n'); i >= 0 {
			j := lr.start + scanned + i
			line := lr.buf[lr.start:j]
			lr.start = j + 1
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			}
			if len(line) > lr.max {
				return "", lr.tooLong()
			}
			s := string(line)
			lr.compact()
			return s, nil
		}
		scanned = lr.end - lr.start
		// max content, plus the CR that may be stripped, without an LF yet.
		if scanned > lr.max+1 {
			return "", lr.tooLong()
		}
		if lr.err != nil {
			if lr.err == io.EOF && scanned > 0 {
				return "", io.ErrUnexpectedEOF
			}
			return "", lr.err
		}
		lr.makeRoom()
		n, err := lr.r.Read(lr.buf[lr.end:])
		if n < 0 || n > len(lr.buf)-lr.end {
			err = fmt.Errorf("wire: reader returned invalid count %d", n)
			n = 0
		}
		lr.end += n
		if err != nil {
			lr.err = err // data first, the error once it is consumed
		}
	}
}

func (lr *LineReader) tooLong() error {
	lr.err = fmt.Errorf("%w (limit %d bytes)", ErrLineTooLong, lr.max)
	// The rest of the stream is out of step; drop it.
	lr.start, lr.end = 0, 0
	return lr.err
}

// makeRoom ensures buf[end:] is not empty: first by moving unread data to
// the front, then by growing, never beyond what one line of max bytes needs.
func (lr *LineReader) makeRoom() {
	if lr.end < len(lr.buf) {
		return
	}
	if lr.start > 0 {
		lr.end = copy(lr.buf, lr.buf[lr.start:lr.end])
		lr.start = 0
		return
	}
	// The buffer is full of one partial line of at most max+1 bytes (else
	// ReadLine has already failed), so max+2 holds it plus its LF.
	size := min(2*len(lr.buf), lr.max+2)
	nb := make([]byte, max(size, len(lr.buf)+1))
	copy(nb, lr.buf[:lr.end])
	lr.buf = nb
}

// compact gives back a grown buffer once the long line it was grown for is
// consumed, so a connection that received one large stats reply does not
// keep a megabyte while idle.
func (lr *LineReader) compact() {
	if lr.start == lr.end {
		lr.start, lr.end = 0, 0
	}
	if len(lr.buf) <= shrinkAbove || lr.end-lr.start > readerBufSize {
		return
	}
	nb := make([]byte, readerBufSize)
	lr.end = copy(nb, lr.buf[lr.start:lr.end])
	lr.start = 0
	lr.buf = nb
}
