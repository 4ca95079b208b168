"""Status LEDs and the relay/siren output: a technician reads the gateway at a glance.

``states`` decides (pure), ``driver`` follows the status model, and the backends show
it: ``sysfs`` (the Linux LED class), ``gpiod_backend`` (GPIO lines), ``mock`` (records).
"""

from gateway.leds.driver import LedDriver, open_backend
from gateway.leds.states import STATES, LedState, Pattern, led_state

__all__ = ["STATES", "LedDriver", "LedState", "Pattern", "led_state", "open_backend"]
