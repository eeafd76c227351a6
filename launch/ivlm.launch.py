"""ros2 launch ivlm_ros ivlm.launch.py [image_topic:=...] [camera_info_topic:=...] [config_file:=...]
[namespace:=...] [use_compressed:=true] [rviz:=true]

Starts the ivlm lifecycle node (it configures/activates itself unless autostart:=false) and optionally RViz
with config/ivlm.rviz. Imports of launch/launch_ros stay in this file: they exist only on real ROS installs.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("ivlm_ros")
    args = [
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument(
            "config_file",
            default_value=os.path.join(share, "config", "ivlm.yaml"),
            description="parameter file (weights, body model, thresholds, ...)",
        ),
        DeclareLaunchArgument("image_topic", default_value="/camera/color/image_raw"),
        DeclareLaunchArgument("camera_info_topic", default_value="/camera/color/camera_info"),
        DeclareLaunchArgument(
            "use_compressed", default_value="false", description="subscribe to <image>/compressed"
        ),
        DeclareLaunchArgument("input_reliability", default_value="best_effort", description="or 'reliable'"),
        DeclareLaunchArgument("autostart", default_value="true", description="configure+activate on start"),
        DeclareLaunchArgument("rviz", default_value="false", description="open RViz with config/ivlm.rviz"),
        DeclareLaunchArgument("rviz_config", default_value=os.path.join(share, "config", "ivlm.rviz")),
    ]
    node = LifecycleNode(
        package="ivlm_ros",
        executable="ivlm_node",
        name="ivlm",
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
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="ivlm_rviz",
        arguments=["-d", LaunchConfiguration("rviz_config")],
        condition=IfCondition(LaunchConfiguration("rviz")),
        output="log",
    )
    return LaunchDescription([*args, node, rviz])
