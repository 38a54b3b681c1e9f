import Lumen
