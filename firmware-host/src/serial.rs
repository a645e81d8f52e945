//! A serial port or pseudo-terminal as the firmware's `embedded-io` UART.

use std::io;

use serialport::{SerialPort, TTYPort};

/// `embedded-io` over a `TTYPort`. Reads are only issued when bytes are waiting
/// (`FIONREAD`), so they never block; writes block at most the port timeout. `flush` does
/// not wait for the line to drain (`tcdrain` on a pty whose reader stalled would block the
/// control loop): every write already hands the bytes to the kernel.
pub struct PtySerial {
    port: TTYPort,
}

impl PtySerial {
    pub fn new(port: TTYPort) -> Self {
        Self { port }
    }

    /// Opens a serial device or pty path in raw mode, shared (no `TIOCEXCL`).
    pub fn open(
        path: &str,
        baud: u32,
        write_timeout: std::time::Duration,
    ) -> serialport::Result<Self> {
        let port = serialport::new(path, baud)
            .timeout(write_timeout)
            .open_native()?;
        let mut serial = Self { port };
        serial.port.set_exclusive(false)?;
        Ok(serial)
    }
}

impl std::os::fd::AsRawFd for PtySerial {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.port.as_raw_fd()
    }
}

impl embedded_io::ErrorType for PtySerial {
    type Error = io::Error;
}

impl embedded_io::ReadReady for PtySerial {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(self.port.bytes_to_read()? > 0)
    }
}

impl embedded_io::Read for PtySerial {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        io::Read::read(&mut self.port, buf)
    }
}

impl embedded_io::Write for PtySerial {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        io::Write::write(&mut self.port, buf)
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}
