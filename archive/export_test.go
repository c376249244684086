package archive

// writeRaw writes an arbitrary record; tests use it to build files this
// Writer would refuse to make (optional and unknown record types).
func (w *Writer) writeRaw(typ, flags byte, meta, payload []byte) error {
	if w.err != nil {
		return w.err
	}
	if err := w.flushZero(); err != nil {
		return err
	}
	return w.writeRecord(typ, flags, meta, payload)
}
