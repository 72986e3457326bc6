//! A simulated Venus OS system on D-Bus.
