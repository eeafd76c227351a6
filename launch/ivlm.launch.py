"""ros2 launch ivlm_ros ivlm.launch.py [argument:=value ...]

Starts the ivlm lifecycle node (it configures and activates itself unless autostart:=false) and, with
rviz:=true, RViz showing the node's markers, object pose, debug image and camera image for THIS launch's
namespace and image topic (the RViz config is rendered from config/ivlm.rviz.template at launch). Without
rviz2 installed, rviz:=true logs a warning and the node runs on its own.

Launch arguments (default in brackets):
  namespace          [''] ROS namespace of the node (and of RViz); its ~/ topics become
                     /<namespace>/ivlm/<topic>, and relative image/camera_info topics resolve under it.
  config_file        [<share>/config/ivlm.yaml] ROS parameter YAML with the weights, body models, thresholds
                     and every other node parameter; the arguments below override its values.
  image_topic        [/camera/color/image_raw] sensor_msgs/Image topic of the camera (with
                     use_compressed:=true the node subscribes to <image_topic>/compressed instead).
  camera_info_topic  [/camera/color/camera_info] sensor_msgs/CameraInfo topic paired with the images by
                     stamp; its intrinsics place the body and the object in the camera frame.
  use_compressed     [false] true: subscribe to the sensor_msgs/CompressedImage topic <image_topic>/compressed
                     (JPEG/PNG) instead of raw images.
  input_reliability  [best_effort] QoS reliability of the image and camera_info subscriptions: 'best_effort'
                     (sensor-data QoS, what camera drivers publish) or 'reliable' (bag replays, reliable
                     publishers).
  autostart          [true] true: the node configures (loads the weights) and activates itself; false: it
                     waits for lifecycle transitions (ros2 lifecycle set /ivlm configure).
  rviz               [false] true: also start RViz (rviz2) with rviz_config; skipped with a warning when
                     rviz2 is not installed.
  rviz_config        [<share>/config/ivlm.rviz.template] RViz config to open: a template whose
                     $-placeholders are filled with this launch's namespace and topics, or a plain .rviz file
                     used as it is.

Imports of launch/launch_ros stay in this file (they exist only on real ROS installs); what it decides is in
ivlm_ros/launch_support.py, which is tested without them.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.logging import get_logger
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue

from ivlm_core.errors import IvlmError
from ivlm_ros.launch_support import NODE_NAME, find_rviz2, launch_flag, write_rviz_config
from launch import LaunchDescription


def _rviz_if_available(context, *args, **kwargs):
    """RViz with the config rendered for this namespace and topics, or nothing (and a warning) without rviz2."""

    def value(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    logger = get_logger("ivlm.launch")
    try:
        if not launch_flag("rviz", value("rviz")):
            return []
        if find_rviz2() is None:
            logger.warning("rviz:=true but rviz2 is not installed (apt install ros-$ROS_DISTRO-rviz2): "
                           "starting ivlm without RViz")
            return []
        config = write_rviz_config(value("rviz_config"), value("namespace"), value("image_topic"),
                                   value("input_reliability"))
    except IvlmError as err:  # a bad RViz argument must not take the already started node down with it
        logger.warning(f"RViz not started: {err}")
        return []
    return [Node(package="rviz2", executable="rviz2", name="ivlm_rviz", namespace=value("namespace"),
                 arguments=["-d", str(config)], output="log")]


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("ivlm_ros")
    args = [
        DeclareLaunchArgument(
            "namespace", default_value="",
            description="ROS namespace of the node and of RViz; the node's ~/ topics become "
                        "/<namespace>/ivlm/<topic> and relative input topics resolve under it"),
        DeclareLaunchArgument(
            "config_file", default_value=os.path.join(share, "config", "ivlm.yaml"),
            description="ROS parameter YAML (weights, body models, thresholds, every node parameter); the "
                        "other launch arguments override its values"),
        DeclareLaunchArgument(
            "image_topic", default_value="/camera/color/image_raw",
            description="sensor_msgs/Image topic of the camera (with use_compressed:=true, "
                        "<image_topic>/compressed is used)"),
        DeclareLaunchArgument(
            "camera_info_topic", default_value="/camera/color/camera_info",
            description="sensor_msgs/CameraInfo topic paired with the images by stamp; its intrinsics place "
                        "the body and object in the camera frame"),
        DeclareLaunchArgument(
            "use_compressed", default_value="false",
            description="true: subscribe to the sensor_msgs/CompressedImage topic <image_topic>/compressed "
                        "(JPEG/PNG) instead of raw images"),
        DeclareLaunchArgument(
            "input_reliability", default_value="best_effort",
            description="QoS reliability of the image and camera_info subscriptions: 'best_effort' "
                        "(sensor-data QoS, as camera drivers publish) or 'reliable' (bag replays, reliable "
                        "publishers)"),
        DeclareLaunchArgument(
            "autostart", default_value="true",
            description="true: the node configures (loads the weights) and activates itself; false: it waits "
                        "for lifecycle transitions"),
        DeclareLaunchArgument(
            "rviz", default_value="false",
            description="true: also start RViz with rviz_config (skipped with a warning when rviz2 is not "
                        "installed)"),
        DeclareLaunchArgument(
            "rviz_config", default_value=os.path.join(share, "config", "ivlm.rviz.template"),
            description="RViz config: a template whose $-placeholders are filled with this launch's namespace "
                        "and topics, or a plain .rviz file used as it is"),
    ]
    node = LifecycleNode(
        package="ivlm_ros",
        executable="ivlm_node",
        name=NODE_NAME,
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[
            LaunchConfiguration("config_file"),
            {
                "image_topic": LaunchConfiguration("image_topic"),
                "camera_info_topic": LaunchConfiguration("camera_info_topic"),
                "use_compressed": ParameterValue(LaunchConfiguration("use_compressed"), value_type=bool),
                "input_reliability": LaunchConfiguration("input_reliability"),
                "autostart": ParameterValue(LaunchConfiguration("autostart"), value_type=bool),
            },
        ],
    )
    return LaunchDescription([*args, node, OpaqueFunction(function=_rviz_if_available)])
